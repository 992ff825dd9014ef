/**
 * The rules of delta archives (docs/api.yaml, `since`), kept apart from the reader so the
 * reader only calls them at two places.
 *
 * A delta is a complete, verifiable archive of what ferryd actually sent: its manifest
 * says `"kind": "delta"` and the token it is relative to (`since`), and each regular file
 * that is unchanged since that archive is an entry without data carrying the pax records
 * `FERRY.unchanged` (the token), `FERRY.size` and `FERRY.position` (tar.ts). It is not an
 * application's data by itself, so every reader refuses it unless it was built to
 * complete it from the earlier archive (the repository).
 */
import { type Manifest, SINCE_TOKEN } from "../../api/types.js";
import { FerryError } from "../errors.js";
import type { TarHeader } from "./tar.js";

export type ArchiveKind = { kind: "full" } | { kind: "delta"; since: string };

/**
 * The kind a manifest declares. An absent `kind` is a full archive (archives made before
 * deltas existed); anything but "full" or "delta" with a well-formed token is refused, and
 * a delta unless `allowDelta`.
 */
export function manifestKind(m: Manifest, allowDelta: boolean): ArchiveKind {
  if (m.kind === undefined || m.kind === "full") {
    if (m.since !== undefined) throw invalid("a full archive's manifest names a 'since' token");
    return { kind: "full" };
  }
  if (m.kind !== "delta") throw invalid(`unknown archive kind ${JSON.stringify(m.kind)}`);
  if (typeof m.since !== "string" || !SINCE_TOKEN.test(m.since)) {
    throw invalid("a delta archive's manifest lacks a well-formed 'since' token");
  }
  if (!allowDelta) {
    throw new FerryError(
      "ARCHIVE_INVALID",
      "this is a delta archive (files unchanged since an earlier backup carry no data): only 'ferry backup' into a repository can complete it, so it cannot be restored, imported or exported as it is",
    );
  }
  return { kind: "delta", since: m.since };
}

/** An unchanged entry is only allowed in a delta, relative to the delta's own token. */
export function checkUnchangedEntry(h: TarHeader, kind: ArchiveKind): void {
  if (h.unchanged === undefined) return;
  if (kind.kind !== "delta") {
    throw invalid(
      `${JSON.stringify(h.path)} is marked unchanged in an archive that is not a delta`,
    );
  }
  if (h.unchanged.since !== kind.since) {
    throw invalid(`${JSON.stringify(h.path)} is unchanged since another archive than the delta's`);
  }
}

/** The end record's `token`, if any, is a well-formed token. */
export function checkEndToken(e: Record<string, unknown>): void {
  if (e.token !== undefined && (typeof e.token !== "string" || !SINCE_TOKEN.test(e.token))) {
    throw invalid("the end record's token is malformed");
  }
}

function invalid(why: string): FerryError {
  return new FerryError("ARCHIVE_INVALID", `invalid archive: ${why}`);
}
