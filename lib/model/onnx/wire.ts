// Protocol-buffers wire format (varint, fixed32, fixed64, length-delimited), reading and writing.
// The reader never copies length-delimited payloads: it hands out subarrays of the input, so a model's
// raw tensor bytes stay views into the buffer the file was read into.
import { TimeEditError } from '../../errors.js';

/** An int64/uint64 value: a plain number when it fits exactly (|v| ≤ 2^53 − 1), a bigint otherwise. */
export type Int64 = number | bigint;

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LEN = 2;
export const WIRE_FIXED32 = 5;

export class ProtobufError extends TimeEditError {
  override readonly name = 'ProtobufError';
}

const TWO_32 = 4294967296;

function int64FromParts(lo: number, hi: number, signed: boolean): Int64 {
  // lo, hi: unsigned 32-bit halves.
  if (signed && hi >= 0x80000000) {
    const v = (hi - TWO_32) * TWO_32 + lo; // exact when it is a safe integer
    if (v >= -Number.MAX_SAFE_INTEGER) return v;
    return BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo));
  }
  if (hi < 0x200000) return hi * TWO_32 + lo;
  return (BigInt(hi) << 32n) | BigInt(lo);
}

export class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  private fail(what: string): never {
    throw new ProtobufError(`truncated or corrupt protobuf: ${what} at byte ${this.pos}`);
  }

  /** Reads a varint as its two unsigned 32-bit halves. */
  private varintParts(): [number, number] {
    let lo = 0;
    let hi = 0;
    const buf = this.buf;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('varint');
      const b = buf[this.pos++]!;
      if (i < 4) lo |= (b & 0x7f) << (7 * i);
      else if (i === 4) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >> 4;
      } else hi |= (b & 0x7f) << (7 * i - 32);
      if ((b & 0x80) === 0) return [lo >>> 0, hi >>> 0];
    }
    this.fail('varint longer than 10 bytes');
  }

  /** Unsigned varint that must fit a JS number (tags, lengths). */
  uint32(): number {
    const [lo, hi] = this.varintParts();
    if (hi !== 0) {
      const v = hi * TWO_32 + lo;
      if (!Number.isSafeInteger(v)) this.fail('length or tag too large');
      return v;
    }
    return lo;
  }

  int64(): Int64 {
    const [lo, hi] = this.varintParts();
    return int64FromParts(lo, hi, true);
  }

  uint64(): Int64 {
    const [lo, hi] = this.varintParts();
    return int64FromParts(lo, hi, false);
  }

  int32(): number {
    const [lo] = this.varintParts();
    return lo | 0;
  }

  float(): number {
    if (this.pos + 4 > this.end) this.fail('fixed32');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }

  double(): number {
    if (this.pos + 8 > this.end) this.fail('fixed64');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 8).getFloat64(0, true);
    this.pos += 8;
    return v;
  }

  /** A length-delimited payload as a subarray (no copy). */
  bytes(): Uint8Array {
    const n = this.uint32();
    if (this.pos + n > this.end) this.fail(`length-delimited field of ${n} bytes`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Skips one field's payload of the given wire type, returning where it started. */
  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varintParts();
        return;
      case WIRE_FIXED64:
        if (this.pos + 8 > this.end) this.fail('fixed64');
        this.pos += 8;
        return;
      case WIRE_LEN:
        this.bytes();
        return;
      case WIRE_FIXED32:
        if (this.pos + 4 > this.end) this.fail('fixed32');
        this.pos += 4;
        return;
      default:
        this.fail(`unsupported wire type ${wireType}`);
    }
  }
}

const textEncoder = new TextEncoder();

/**
 * Accumulates output as a list of chunks: small writes go to a growing scratch buffer, large byte payloads
 * (tensor data) are appended as references, so encoding a model copies each tensor once, at `finish`.
 */
export class Writer {
  private chunks: Uint8Array[] = [];
  private scratch = new Uint8Array(256);
  private used = 0;
  private flushedLength = 0;

  get length(): number {
    return this.flushedLength + this.used;
  }

  private ensure(n: number): void {
    if (this.used + n <= this.scratch.length) return;
    const grown = new Uint8Array(Math.max(this.scratch.length * 2, this.used + n));
    grown.set(this.scratch.subarray(0, this.used));
    this.scratch = grown;
  }

  private flushScratch(): void {
    if (this.used === 0) return;
    this.chunks.push(this.scratch.slice(0, this.used));
    this.flushedLength += this.used;
    this.used = 0;
  }

  byte(b: number): void {
    this.ensure(1);
    this.scratch[this.used++] = b;
  }

  uint32(v: number): void {
    if (v < 0 || !Number.isSafeInteger(v)) throw new ProtobufError(`cannot encode ${v} as an unsigned varint`);
    this.ensure(10);
    while (v >= 0x80) {
      this.scratch[this.used++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.scratch[this.used++] = v;
  }

  /** int64/int32/uint64 as a varint (negative values take 10 bytes, two's complement). */
  int64(v: Int64): void {
    if (typeof v === 'number') {
      if (!Number.isInteger(v)) throw new ProtobufError(`cannot encode ${v} as an integer`);
      if (v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
        this.uint32(v);
        return;
      }
      v = BigInt(v);
    }
    let u = BigInt.asUintN(64, v);
    this.ensure(10);
    while (u >= 0x80n) {
      this.scratch[this.used++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.scratch[this.used++] = Number(u);
  }

  tag(no: number, wireType: number): void {
    this.uint32(no * 8 + wireType);
  }

  float(v: number): void {
    this.ensure(4);
    new DataView(this.scratch.buffer, this.used, 4).setFloat32(0, v, true);
    this.used += 4;
  }

  double(v: number): void {
    this.ensure(8);
    new DataView(this.scratch.buffer, this.used, 8).setFloat64(0, v, true);
    this.used += 8;
  }

  /** Appends bytes verbatim; large payloads are kept by reference until `finish`. */
  raw(b: Uint8Array): void {
    if (b.length <= 64) {
      this.ensure(b.length);
      this.scratch.set(b, this.used);
      this.used += b.length;
      return;
    }
    this.flushScratch();
    this.chunks.push(b);
    this.flushedLength += b.length;
  }

  lenBytes(b: Uint8Array): void {
    this.uint32(b.length);
    this.raw(b);
  }

  string(s: string): void {
    this.lenBytes(textEncoder.encode(s));
  }

  /** Appends another writer's content as a length-delimited payload (its chunks are moved, not copied). */
  lenWriter(w: Writer): void {
    this.uint32(w.length);
    w.flushScratch();
    this.flushScratch();
    for (const c of w.chunks) this.chunks.push(c);
    this.flushedLength += w.flushedLength;
  }

  /** The chunks written so far (for streaming to a file without one big concatenation). */
  parts(): Uint8Array[] {
    this.flushScratch();
    return this.chunks;
  }

  finish(): Uint8Array {
    const parts = this.parts();
    const out = new Uint8Array(this.flushedLength);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}
