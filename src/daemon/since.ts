/**
 * The `since` parameter of `POST /v1/apps/{app}/backup` (docs/api.yaml): the token of an
 * earlier backup's end record, asking for a delta. It becomes a file name in ferryd's
 * root-owned state directory, so anything but 32 lowercase hex digits is refused here,
 * before a name is formed from it.
 */
import type { IncomingMessage } from "node:http";
import { SINCE_TOKEN } from "../api/types.js";
import { FerryError } from "../core/errors.js";
import type { SinceIndex } from "../drivers/types.js";

/** The request's `since` token, undefined without one; BAD_REQUEST when malformed. */
export function sinceParam(req: IncomingMessage): string | undefined {
  const values = new URL(req.url ?? "/", "http://ferry").searchParams.getAll("since");
  if (values.length === 0) return undefined;
  const token = values[0] as string;
  if (values.length > 1 || !SINCE_TOKEN.test(token)) {
    throw new FerryError(
      "BAD_REQUEST",
      "'since' must be the token of an earlier backup's end record (32 lowercase hex digits), given once",
    );
  }
  return token;
}

/** The manifest's `kind` (and `since`) for a backup with this index session. */
export function archiveKind(
  index: SinceIndex | undefined,
): { kind: "full" } | { kind: "delta"; since: string } {
  return index?.since === undefined ? { kind: "full" } : { kind: "delta", since: index.since };
}
