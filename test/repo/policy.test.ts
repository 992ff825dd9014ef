/**
 * forget's keep policies against restic: the expected keep sets below were computed by
 * restic 0.14.0 (Debian's package) on these exact snapshot times (host h, TZ=UTC,
 * `restic backup --time T`, every 7th snapshot tagged keepme, `restic forget --dry-run
 * --json POLICY`), then pinned here.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { applyPolicy, type KeepPolicy } from "../../src/repo/policy.js";

const TIMES = [
  "2024-01-01 10:00:00",
  "2024-01-01 10:30:00",
  "2024-01-01 11:15:00",
  "2024-01-02 09:00:00",
  "2024-01-03 23:59:00",
  "2024-01-04 00:01:00",
  "2024-01-07 12:00:00",
  "2024-01-08 12:00:00",
  "2024-01-14 08:00:00",
  "2024-01-15 08:00:00",
  "2024-01-31 20:00:00",
  "2024-02-01 20:00:00",
  "2024-02-29 12:00:00",
  "2024-03-15 06:00:00",
  "2024-03-15 06:45:00",
  "2024-03-15 07:10:00",
  "2024-06-30 18:00:00",
  "2024-12-30 12:00:00",
  "2024-12-31 23:00:00",
  "2025-01-01 01:00:00",
  "2025-01-05 09:00:00",
  "2025-02-10 09:00:00",
  "2025-02-10 09:20:00",
  "2025-02-11 09:00:00",
  "2025-02-12 10:00:00",
  "2025-02-12 10:05:00",
];

const SNAPS = TIMES.map((t, i) => ({
  id: `s${i + 1}`,
  time: `${t.replace(" ", "T")}Z`,
  tags: (i + 1) % 7 === 0 ? ["keepme"] : [],
}));

const TABLE: [string, KeepPolicy, string[]][] = [
  [
    "--keep-last 3",
    { last: 3 },
    ["2025-02-11 09:00:00", "2025-02-12 10:00:00", "2025-02-12 10:05:00"],
  ],
  [
    "--keep-hourly 5",
    { hourly: 5 },
    [
      "2025-01-01 01:00:00",
      "2025-01-05 09:00:00",
      "2025-02-10 09:20:00",
      "2025-02-11 09:00:00",
      "2025-02-12 10:05:00",
    ],
  ],
  [
    "--keep-daily 4",
    { daily: 4 },
    ["2025-01-05 09:00:00", "2025-02-10 09:20:00", "2025-02-11 09:00:00", "2025-02-12 10:05:00"],
  ],
  [
    "--keep-weekly 3",
    { weekly: 3 },
    ["2024-06-30 18:00:00", "2025-01-05 09:00:00", "2025-02-12 10:05:00"],
  ],
  [
    "--keep-monthly 6",
    { monthly: 6 },
    [
      "2024-02-29 12:00:00",
      "2024-03-15 07:10:00",
      "2024-06-30 18:00:00",
      "2024-12-31 23:00:00",
      "2025-01-05 09:00:00",
      "2025-02-12 10:05:00",
    ],
  ],
  ["--keep-yearly 5", { yearly: 5 }, ["2024-12-31 23:00:00", "2025-02-12 10:05:00"]],
  [
    "--keep-daily 2 --keep-weekly 2 --keep-monthly 2",
    { daily: 2, weekly: 2, monthly: 2 },
    ["2025-01-05 09:00:00", "2025-02-11 09:00:00", "2025-02-12 10:05:00"],
  ],
  [
    "--keep-last 1 --keep-tag keepme",
    { last: 1, tags: ["keepme"] },
    ["2024-01-07 12:00:00", "2024-03-15 06:00:00", "2025-01-05 09:00:00", "2025-02-12 10:05:00"],
  ],
  [
    "--keep-hourly 100",
    { hourly: 100 },
    TIMES.filter(
      (t) =>
        t !== "2024-01-01 10:00:00" &&
        t !== "2024-03-15 06:00:00" &&
        t !== "2025-02-10 09:00:00" &&
        t !== "2025-02-12 10:00:00",
    ),
  ],
  [
    "--keep-monthly 30",
    { monthly: 30 },
    [
      "2024-01-31 20:00:00",
      "2024-02-29 12:00:00",
      "2024-03-15 07:10:00",
      "2024-06-30 18:00:00",
      "2024-12-31 23:00:00",
      "2025-01-05 09:00:00",
      "2025-02-12 10:05:00",
    ],
  ],
];

for (const [name, policy, expected] of TABLE) {
  test(`forget ${name} keeps what restic 0.14 keeps`, () => {
    // Shuffled input: the policy sorts by time itself.
    const input = [...SNAPS].sort(
      (a, b) =>
        ((a.id.length * 7 + a.id.charCodeAt(1)) % 5) - ((b.id.length * 7 + b.id.charCodeAt(1)) % 5),
    );
    const r = applyPolicy(input, policy);
    const kept = r.keep.map((k) => k.snapshot.time.slice(0, 19).replace("T", " ")).sort();
    assert.deepEqual(kept, [...expected].sort());
    assert.equal(r.keep.length + r.remove.length, SNAPS.length);
  });
}

test("forget --keep-weekly -1 keeps one snapshot of every week (unlimited)", () => {
  const r = applyPolicy(SNAPS, { weekly: -1 });
  const weeks = new Set(r.keep.map((k) => k.snapshot.id));
  // ISO weeks with snapshots: 2024-W01, W02, W03, W05, W09, W11, W26, 2025-W01 (from
  // 2024-12-30), 2025-W07; the newest of each is kept.
  assert.deepEqual([...weeks].sort(), [
    "s10",
    "s12",
    "s13",
    "s16",
    "s17",
    "s21",
    "s26",
    "s7",
    "s9",
  ]);
});

test("forget with no keep rule is refused instead of removing everything", () => {
  assert.throws(() => applyPolicy(SNAPS, {}), /no keep policy/);
  assert.throws(() => applyPolicy(SNAPS, { tags: [] }), /no keep policy/);
});

test("forget --keep-tag a,b needs both tags", () => {
  const list = [
    { id: "x", time: "2024-01-01T00:00:00Z", tags: ["a"] },
    { id: "y", time: "2024-01-02T00:00:00Z", tags: ["a", "b"] },
    { id: "z", time: "2024-01-03T00:00:00Z", tags: [] },
  ];
  const r = applyPolicy(list, { tags: ["a,b"] });
  assert.deepEqual(
    r.keep.map((k) => k.snapshot.id),
    ["y"],
  );
});
