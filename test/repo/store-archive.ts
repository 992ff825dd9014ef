/**
 * Test helper process: stores the archive on stdin as a snapshot, as `ferry backup` does
 * with ferryd's stream (shared lock, index loaded, snapshot last), so that crash and
 * concurrency tests need neither root nor ferryd. Usage: node store-archive.js REPO APP.
 * Prints the snapshot id.
 */
import { ArchiveStore } from "../../src/repo/archive.js";
import { LocalBackend } from "../../src/repo/backend.js";
import { RepoLock } from "../../src/repo/lock.js";
import { Repository } from "../../src/repo/repository.js";

const [path, app] = process.argv.slice(2) as [string, string];
const repo = await Repository.open(new LocalBackend(path), {
  password: process.env.FERRY_PASSWORD,
});
const lock = await RepoLock.acquire(repo, false);
await repo.loadIndex();
const store = new ArchiveStore(repo, { app, tags: [] });
for await (const chunk of process.stdin) await store.write(chunk as Buffer);
const { id } = await store.finish();
await lock.release();
process.stdout.write(`${id}\n`);
