/**
 * Asking the person at the terminal before something that cannot be undone (`ferry
 * import` replacing an application's data). There is someone to ask when stderr is a
 * terminal and an answer can be read from one: stdin, or /dev/tty when stdin carries the
 * archive. Without a terminal (scripts, timers, pipes with no controlling terminal)
 * nobody is asked: `--yes` says the same explicitly.
 */
import { openSync } from "node:fs";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { ReadStream } from "node:tty";

export interface Terminal {
  input: Readable;
  close(): void;
}

/** The terminal to ask on, or undefined when there is none. */
export function questionTerminal(): Terminal | undefined {
  if (process.stderr.isTTY !== true) return undefined;
  if (process.stdin.isTTY === true) {
    return { input: process.stdin, close: () => process.stdin.pause() };
  }
  try {
    const tty = new ReadStream(openSync("/dev/tty", "r"));
    return { input: tty, close: () => tty.destroy() };
  } catch {
    return undefined;
  }
}

/** Asks `question` (on stderr) and reads one line: true only for y or yes. */
export async function confirm(term: Terminal, question: string): Promise<boolean> {
  process.stderr.write(`${question} [y/N] `);
  const rl = createInterface({ input: term.input, terminal: false });
  try {
    const line = await new Promise<string>((resolve) => {
      rl.once("line", resolve);
      rl.once("close", () => resolve(""));
    });
    return /^\s*y(es)?\s*$/i.test(line);
  } finally {
    rl.close();
    term.close();
  }
}
