/** Atomic file writes: write a temporary file in the same folder, fsync, then rename over the target. */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';

function tmpName(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
}

/**
 * Writes chunks to `target` atomically: readers see the old file or the complete new one.
 * Chunks may come from a generator, so large files are streamed rather than held in memory.
 */
export function writeFileAtomic(target: string, chunks: Iterable<Uint8Array | string>): void {
  const dir = path.dirname(target);
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new SiftError('E_IO', `cannot create folder ${dir}: ${(e as Error).message}`);
  }
  const tmp = tmpName(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w', 0o644);
    for (const c of chunks) {
      const buf = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      let off = 0;
      while (off < buf.byteLength) off += fs.writeSync(fd, buf, off, buf.byteLength - off);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* not created */
    }
    if (e instanceof SiftError) throw e;
    throw new SiftError('E_IO', `cannot write ${target}: ${(e as Error).message}`);
  }
}

/** The same over fs.promises; chunks may be produced asynchronously (e.g. device-to-host copies). */
export async function writeFileAtomicAsync(
  target: string,
  chunks: Iterable<Uint8Array | string> | AsyncIterable<Uint8Array | string>,
): Promise<void> {
  const dir = path.dirname(target);
  try {
    await fs.promises.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new SiftError('E_IO', `cannot create folder ${dir}: ${(e as Error).message}`);
  }
  const tmp = tmpName(target);
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(tmp, 'w', 0o644);
    for await (const c of chunks) {
      const buf = typeof c === 'string' ? Buffer.from(c, 'utf8') : c;
      let off = 0;
      while (off < buf.byteLength) off += (await fh.write(buf, off, buf.byteLength - off)).bytesWritten;
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fs.promises.rename(tmp, target);
  } catch (e) {
    if (fh !== undefined) await fh.close().catch(() => undefined);
    await fs.promises.unlink(tmp).catch(() => undefined);
    if (e instanceof SiftError) throw e;
    throw new SiftError('E_IO', `cannot write ${target}: ${(e as Error).message}`);
  }
}
