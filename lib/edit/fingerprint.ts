// A fingerprint of the model an edit is made for: sha256 over the text encoder's files (which define the
// embeddings C and C*) and the values of every cross-attention K/V weight in discovery order (which the edit
// transforms). Names are not hashed, so a re-export with other initializer names keeps its fingerprint.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { CrossAttentionMap } from '../model/cross-attention.js';
import { tensorToFloat32, type GraphProto } from '../model/onnx/index.js';

async function hashFile(hash: ReturnType<typeof createHash>, path: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const s = createReadStream(path);
    s.on('data', (chunk) => hash.update(chunk));
    s.on('end', () => resolve());
    s.on('error', reject);
  });
}

/** Hex sha256 of the text encoder folder's files (sorted by name) and the K/V weights' values. */
export async function modelFingerprint(
  textEncoderDir: string,
  unet: { graph: GraphProto; dir: string },
  map: CrossAttentionMap,
): Promise<string> {
  const hash = createHash('sha256');
  hash.update('time-edit fingerprint 1\n');
  const names = (await readdir(textEncoderDir)).sort();
  for (const name of names) {
    const p = join(textEncoderDir, name);
    if (!(await stat(p)).isFile()) continue;
    hash.update(`file ${name}\n`);
    await hashFile(hash, p);
  }
  const inits = new Map(unet.graph.initializer.map((t) => [t.name ?? '', t]));
  for (const layer of map.layers)
    for (const p of [layer.k, layer.v]) {
      const t = inits.get(p.initializer)!;
      const v = tensorToFloat32(t, unet.dir);
      hash.update(`${p.kind} ${p.inputWidth}x${p.width}\n`);
      hash.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    }
  return hash.digest('hex');
}
