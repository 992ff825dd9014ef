/**
 * Finds the line of a key in TOML source, so that config errors can name it. smol-toml
 * reports positions only for syntax errors; for schema errors we scan table headers and
 * key lines ourselves. Best effort by design: if a key cannot be placed (say it is inside
 * an inline table), the line of the closest enclosing table or key is returned.
 */

function parseKeyPath(text: string): string[] | undefined {
  const parts: string[] = [];
  let i = 0;
  const s = text.trim();
  while (i < s.length) {
    while (s[i] === " " || s[i] === "\t") i++;
    const ch = s[i];
    if (ch === '"' || ch === "'") {
      const end = s.indexOf(ch, i + 1);
      if (end < 0) return undefined;
      parts.push(s.slice(i + 1, end));
      i = end + 1;
    } else {
      const m = /^[A-Za-z0-9_-]+/.exec(s.slice(i));
      if (m === null) return undefined;
      parts.push(m[0]);
      i += m[0].length;
    }
    while (s[i] === " " || s[i] === "\t") i++;
    if (i < s.length) {
      if (s[i] !== ".") return undefined;
      i++;
    }
  }
  return parts;
}

function commonPrefix(a: readonly string[], b: readonly string[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** 1-based line of the key at `path` (string segments only), or undefined. */
export function findKeyLine(
  source: string,
  path: readonly (string | number)[],
): number | undefined {
  const want = path.filter((p): p is string => typeof p === "string");
  let table: string[] = [];
  let best: { line: number; score: number } | undefined;
  const lines = source.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const line = (lines[n] as string).trim();
    if (line === "" || line.startsWith("#")) continue;
    let full: string[] | undefined;
    const header = /^\[\[?([^\]]+)\]\]?\s*(#.*)?$/.exec(line);
    if (header !== null) {
      table = parseKeyPath(header[1] as string) ?? [];
      full = table;
    } else {
      const eq = line.indexOf("=");
      if (eq > 0) {
        const key = parseKeyPath(line.slice(0, eq));
        if (key !== undefined) full = [...table, ...key];
      }
    }
    if (full === undefined) continue;
    const score = commonPrefix(full, want);
    // Only lines that lie on the wanted path count; deeper is better, exact is best.
    if (score === full.length && (best === undefined || score > best.score)) {
      best = { line: n + 1, score };
    }
  }
  return best?.line;
}
