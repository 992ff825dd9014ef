/**
 * Defaults both sides need: where ferryd's config, socket and state live unless told
 * otherwise. Imports nothing of Ferry (so `ferry` can know the socket path without loading
 * any of ferryd).
 */

export const DEFAULT_CONFIG = "/etc/ferry/ferry.toml";
export const DEFAULT_SOCKET = "/run/ferry/ferry.sock";
export const DEFAULT_STATE_DIR = "/var/lib/ferry";
