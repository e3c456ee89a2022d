// Storage-bench harness for Helia (see /work/shared harness protocol): drives a Helia 7 node whose blocks live in
// blockstore-fs, prints ONE JSON line on stdout, diagnostics on stderr.
//
//   node --import ./polyfill.mjs harness.mjs --dir DIR --workload put|get|add-large|read-large|put-during-gc|unixfs-add|car-export
//        [--size-bytes S] [--count N] [--inflight K] [--total-bytes T] [--input PATH] [--seed X]
//        [--durable] [--cold-export] [--chunk-bytes C] [--large-hasher sha2-256|blake3-leaves]

import { execFileSync } from 'node:child_process'
import { createReadStream, writeFileSync } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { car } from '@helia/car'
import { unixfs } from '@helia/unixfs'
import { FsBlockstore } from 'blockstore-fs'
import { NextToLast } from 'blockstore-fs/sharding'
import { FsDatastore } from 'datastore-fs'
import { createBLAKE3 } from 'hash-wasm'
import { createHeliaLight } from 'helia'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import * as Digest from 'multiformats/hashes/digest'
import { from as hasherFrom } from 'multiformats/hashes/hasher'

const SYSTEM = 'helia'
const WORKLOADS = ['put', 'get', 'add-large', 'read-large', 'put-during-gc', 'unixfs-add', 'car-export']
// Workloads whose import must give exactly Kubo's root CID (`ipfs add --cid-version 1` defaults).
const KUBO_WORKLOADS = ['unixfs-add', 'car-export']
const KUBO_CHUNK_BYTES = 262144
const KUBO_LINKS_PER_NODE_MAX = 174
const LARGE_HASHERS = ['sha2-256', 'blake3-leaves']
const FLAGS = ['--cold-export', '--dir', '--workload', '--size-bytes', '--count', '--inflight', '--total-bytes', '--input', '--seed',
  '--chunk-bytes', '--large-hasher', '--durable']
// The content generator keeps 32-bit state, so larger seeds would silently alias smaller ones.
const SEED_MAX = 0xffffffff
const BLAKE3_MULTIHASH_CODE = 0x1e
// Below this many random bytes, two of N blobs could collide and the store would dedupe them, skewing every number.
const SIZE_BYTES_MIN = 16
const TOTAL_BYTES_DEFAULT = 1024 * 1024 * 1024
const CHUNK_BYTES_DEFAULT = 256 * 1024
// 1 MiB reads of the input file keep the harness's own I/O cost small next to the importer's.
const INPUT_READ_BYTES = 1024 * 1024
const GC_WAIT_MS_MAX = 30 * 60 * 1000

class UsageError extends Error {}
class VerificationError extends Error {}

function parseArgs (argv) {
  const opts = {
    dir: undefined,
    workload: undefined,
    sizeBytes: 1024,
    count: 10000,
    inflight: 64,
    totalBytes: undefined,
    input: undefined,
    seed: 1,
    durable: false,
    coldExport: false,
    chunkBytes: CHUNK_BYTES_DEFAULT,
    largeHasher: 'sha2-256'
  }
  const integer = (name, value, min, max = Number.MAX_SAFE_INTEGER) => {
    if (value === undefined || !/^[0-9]+$/.test(value)) {
      throw new UsageError(`${name} needs a non-negative integer, got ${JSON.stringify(value)}`)
    }
    const n = Number(value)
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new UsageError(`${name} must be an integer in ${min}..${max}, got ${value}`)
    }
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]
    const value = argv[i + 1]
    if (!FLAGS.includes(flag)) throw new UsageError(`unknown argument ${JSON.stringify(flag)}`)
    if (flag !== '--durable' && flag !== '--cold-export' && value === undefined) {
      throw new UsageError(`${flag} needs a value`)
    }
    switch (flag) {
      case '--dir': opts.dir = value; i++; break
      case '--workload': opts.workload = value; i++; break
      case '--size-bytes': opts.sizeBytes = integer(flag, value, SIZE_BYTES_MIN); i++; break
      case '--count': opts.count = integer(flag, value, 1); i++; break
      case '--inflight': opts.inflight = integer(flag, value, 1); i++; break
      case '--total-bytes': opts.totalBytes = integer(flag, value, 1); i++; break
      case '--input': opts.input = value; i++; break
      case '--seed': opts.seed = integer(flag, value, 0, SEED_MAX); i++; break
      case '--chunk-bytes': opts.chunkBytes = integer(flag, value, 1); i++; break
      case '--large-hasher': opts.largeHasher = value; i++; break
      case '--durable': opts.durable = true; break
      case '--cold-export': opts.coldExport = true; break
      default: throw new UsageError(`unknown argument ${JSON.stringify(flag)}`)
    }
  }
  if (opts.dir === undefined) throw new UsageError('--dir is required')
  if (!WORKLOADS.includes(opts.workload)) {
    throw new UsageError(`--workload must be one of ${WORKLOADS.join(', ')}, got ${JSON.stringify(opts.workload)}`)
  }
  if (!LARGE_HASHERS.includes(opts.largeHasher)) {
    throw new UsageError(`--large-hasher must be one of ${LARGE_HASHERS.join(', ')}, got ${JSON.stringify(opts.largeHasher)}`)
  }
  if (KUBO_WORKLOADS.includes(opts.workload) &&
      (opts.chunkBytes !== KUBO_CHUNK_BYTES || opts.largeHasher !== 'sha2-256')) {
    throw new UsageError(`--workload ${opts.workload} imports with Kubo's defaults (${KUBO_CHUNK_BYTES}-byte chunks, ` +
      'sha2-256) so its root CID can be compared; drop --chunk-bytes / --large-hasher')
  }
  if (opts.workload === 'put-during-gc' && opts.count < 2) {
    throw new UsageError('--count must be >= 2 for put-during-gc (half is kept, half is garbage)')
  }
  opts.dir = path.resolve(opts.dir)
  opts.input = path.resolve(opts.input ?? path.join(opts.dir, '..', 'large.bin'))
  return opts
}

// xoshiro128** seeded through splitmix32: fast 32-bit-only arithmetic, so generating the blobs stays cheap and
// the same --seed always yields the same bytes.
function createRng (seed) {
  let x = seed >>> 0
  const splitmix32 = () => {
    x = (x + 0x9e3779b9) >>> 0
    let z = x
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = splitmix32(); let b = splitmix32(); let c = splitmix32(); let d = splitmix32()
  const rotl = (v, k) => ((v << k) | (v >>> (32 - k))) >>> 0
  return function next32 () {
    const result = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0
    const t = (b << 9) >>> 0
    c ^= a; d ^= b; b ^= c; a ^= d
    c ^= t
    d = rotl(d, 11)
    return result
  }
}

function generateBlobs (rng, count, sizeBytes) {
  const blobs = new Array(count)
  for (let i = 0; i < count; i++) {
    const blob = new Uint8Array(sizeBytes)
    const view = new DataView(blob.buffer)
    let off = 0
    for (; off + 4 <= sizeBytes; off += 4) view.setUint32(off, rng(), true)
    if (off < sizeBytes) {
      const last = rng()
      for (let k = 0; off < sizeBytes; off++, k++) blob[off] = (last >>> (8 * k)) & 0xff
    }
    blobs[i] = blob
  }
  return blobs
}

function shuffle (rng, items) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng() % (i + 1)
    const tmp = items[i]; items[i] = items[j]; items[j] = tmp
  }
  return items
}

async function createBlake3Hasher () {
  // One wasm instance is enough: init/update/digest run synchronously, so concurrent promises cannot interleave them.
  const wasm = await createBLAKE3(256)
  return hasherFrom({
    name: 'blake3',
    code: BLAKE3_MULTIHASH_CODE,
    encode: (bytes) => {
      wasm.init()
      wasm.update(bytes)
      return wasm.digest('binary')
    }
  })
}

async function fsyncPath (p) {
  const handle = await fs.open(p, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

// blockstore-fs names a block file after its multihash but decodes file names back with CID.decode, which only
// works for sha2-256 (those bytes happen to form a CIDv0); with BLAKE3 getAll(), and so helia.gc(), throws "Invalid
// CID version 30" (ipfs/js-stores#323, closed unfixed). On-disk names stay those of the default strategy; decode
// rebuilds a CIDv1 raw (the codec is not on disk), which is enough because GC only uses the multihash.
class MultihashNextToLast extends NextToLast {
  decode (str) {
    let name = path.basename(str)
    if (name.endsWith(this.extension)) name = name.slice(0, name.length - this.extension.length)
    return CID.createV1(raw.code, Digest.decode(this.base.decoder.decode(name)))
  }
}

// blockstore-fs acks after steno's writeFile+rename, with no fsync anywhere. This subclass adds what a durable ack
// needs on ext4: fsync of the block file at the exact path blockstore-fs wrote, fsync of its shard directory (so the
// rename's directory entry is on disk), and, the first time a shard directory is seen, fsync of the store root (so the
// directory blockstore-fs just created is reachable after a crash).
class FsyncingFsBlockstore extends FsBlockstore {
  #shardDirsSynced = new Set()

  async put (key, val, options) {
    await super.put(key, val, options)
    const { dir, file } = this.shardingStrategy.encode(key)
    const shardDir = path.join(this.path, dir)
    await fsyncPath(path.join(shardDir, file))
    await fsyncPath(shardDir)
    if (!this.#shardDirsSynced.has(dir)) {
      await fsyncPath(this.path)
      this.#shardDirsSynced.add(dir)
    }
    return key
  }
}

// Keeps exactly `inflight` operations outstanding until every index has run: K concurrent promises.
async function runPool (count, inflight, op) {
  let next = 0
  const worker = async () => {
    while (next < count) {
      const i = next++
      await op(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(inflight, count) }, worker))
}

// Nearest-rank percentiles over latencies in milliseconds, reported in whole microseconds.
function latencySummaryUs (latenciesMs) {
  const sorted = Float64Array.from(latenciesMs).sort()
  const rank = (p) => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]
  const us = (ms) => Math.round(ms * 1000)
  return { p50: us(rank(0.5)), p99: us(rank(0.99)), max: us(sorted[sorted.length - 1]) }
}

async function readBlock (blockstore, cid) {
  const chunks = []
  let length = 0
  for await (const chunk of blockstore.get(cid)) {
    chunks.push(chunk)
    length += chunk.byteLength
  }
  if (chunks.length === 1) return chunks[0]
  const out = new Uint8Array(length)
  let off = 0
  for (const chunk of chunks) { out.set(chunk, off); off += chunk.byteLength }
  return out
}

function bytesEqual (a, b) {
  return a.byteLength === b.byteLength && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength),
    Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0
}

async function packageVersion (name) {
  const file = new URL(`./node_modules/${name}/package.json`, import.meta.url)
  return JSON.parse(await fs.readFile(file, 'utf8')).version
}

function log (message) {
  process.stderr.write(`[helia-harness] ${message}\n`)
}

// Hashing is part of the timed put because our store hashes every blob it accepts; Helia's put trusts the caller's CID.
async function putBlobs (ctx, blobs, latenciesMs) {
  const cids = new Array(blobs.length)
  await runPool(blobs.length, ctx.opts.inflight, async (i) => {
    const started = performance.now()
    const cid = CID.createV1(raw.code, ctx.blake3.digest(blobs[i]))
    await ctx.helia.blockstore.put(cid, blobs[i])
    if (latenciesMs !== undefined) latenciesMs[i] = performance.now() - started
    cids[i] = cid
  })
  return cids
}

async function workloadPut (ctx) {
  const { opts } = ctx
  const blobs = generateBlobs(createRng(opts.seed), opts.count, opts.sizeBytes)
  const latenciesMs = new Float64Array(opts.count)
  const started = performance.now()
  const cids = await putBlobs(ctx, blobs, latenciesMs)
  const seconds = (performance.now() - started) / 1000
  for (let i = 0; i < cids.length; i++) {
    if (!(await ctx.helia.blockstore.has(cids[i]))) {
      throw new VerificationError(`blob ${i} (${cids[i]}) is missing after its put was acked`)
    }
  }
  return smallResult(opts, seconds, latenciesMs, {})
}

async function workloadGet (ctx) {
  const { opts } = ctx
  const rng = createRng(opts.seed)
  const blobs = generateBlobs(rng, opts.count, opts.sizeBytes)
  log(`untimed put of ${opts.count} blobs`)
  const cids = await putBlobs(ctx, blobs, undefined)
  const order = shuffle(rng, Array.from({ length: opts.count }, (_, i) => i))
  const latenciesMs = new Float64Array(opts.count)
  let mismatch
  const started = performance.now()
  await runPool(opts.count, opts.inflight, async (n) => {
    const i = order[n]
    const t0 = performance.now()
    const bytes = await readBlock(ctx.helia.blockstore, cids[i])
    latenciesMs[n] = performance.now() - t0
    if (mismatch === undefined && !bytesEqual(bytes, blobs[i])) {
      mismatch = `blob ${i} (${cids[i]}): got ${bytes.byteLength} bytes that differ from the ${blobs[i].byteLength} bytes put`
    }
  })
  const seconds = (performance.now() - started) / 1000
  if (mismatch !== undefined) throw new VerificationError(mismatch)
  return smallResult(opts, seconds, latenciesMs, { get_order: 'shuffled with the seeded rng, every blob once' })
}

async function largeInput (opts) {
  const stat = await fs.stat(opts.input).catch((err) => {
    throw new UsageError(`cannot stat --input ${opts.input}: ${err.message}`)
  })
  const totalBytes = opts.totalBytes ?? stat.size
  if (stat.size < totalBytes) {
    throw new UsageError(`--input ${opts.input} has ${stat.size} bytes, fewer than --total-bytes ${totalBytes}`)
  }
  if (totalBytes === 0) throw new UsageError(`--input ${opts.input} is empty`)
  return totalBytes
}

function blake3LeafImporter (blake3) {
  // Same shape as ipfs-unixfs-importer's default buffer importer for raw leaves, but hashing with BLAKE3: the
  // importer's own hashing (persist.js) is hard-wired to sha2-256 and takes no hasher option.
  return async function * bufferImporter (file, blockstore) {
    for await (const block of file.content) {
      yield async () => {
        const cid = CID.createV1(raw.code, blake3.digest(block))
        await blockstore.put(cid, block)
        return { cid, size: BigInt(block.byteLength), block }
      }
    }
  }
}

async function addLarge (ctx, totalBytes) {
  const { opts } = ctx
  const importOptions = {
    cidVersion: 1,
    rawLeaves: true,
    chunker: fixedSize({ chunkSize: opts.chunkBytes })
  }
  if (opts.largeHasher === 'blake3-leaves') importOptions.bufferImporter = blake3LeafImporter(ctx.blake3)
  const stream = createReadStream(opts.input, { start: 0, end: totalBytes - 1, highWaterMark: INPUT_READ_BYTES })
  const cid = await ctx.fs.addByteStream(stream, importOptions)
  const stat = await ctx.fs.stat(cid)
  if (stat.type !== 'file' && stat.type !== 'raw') {
    throw new VerificationError(`added ${cid} is a ${stat.type}, not a file`)
  }
  if (BigInt(stat.size) !== BigInt(totalBytes)) {
    throw new VerificationError(`added ${cid} reports ${stat.size} bytes, expected ${totalBytes}`)
  }
  return cid
}

async function workloadAddLarge (ctx) {
  const { opts } = ctx
  const totalBytes = await largeInput(opts)
  const started = performance.now()
  const cid = await addLarge(ctx, totalBytes)
  const seconds = (performance.now() - started) / 1000
  return largeResult(opts, totalBytes, seconds, { root_cid: cid.toString() })
}

// Kubo's `ipfs add --cid-version 1` parameters, spelled out rather than left to defaults: @helia/unixfs 8 would use
// 1 MiB chunks and 1024 links per node. addByteStream (not addFile) so the file is not wrapped in a directory.
function kuboImportOptions () {
  return {
    cidVersion: 1,
    rawLeaves: true,
    chunker: fixedSize({ chunkSize: KUBO_CHUNK_BYTES }),
    layout: balanced({ maxChildrenPerNode: KUBO_LINKS_PER_NODE_MAX }),
    reduceSingleLeafToSelf: true
  }
}

async function addKubo (ctx, totalBytes) {
  const stream = createReadStream(ctx.opts.input, { start: 0, end: totalBytes - 1, highWaterMark: INPUT_READ_BYTES })
  return await ctx.fs.addByteStream(stream, kuboImportOptions())
}

async function verifyAddedFile (ctx, cid, totalBytes) {
  const stat = await ctx.fs.stat(cid)
  if (stat.type !== 'file' && stat.type !== 'raw') {
    throw new VerificationError(`added ${cid} is a ${stat.type}, not a file`)
  }
  if (BigInt(stat.size) !== BigInt(totalBytes)) {
    throw new VerificationError(`added ${cid} reports ${stat.size} bytes, expected ${totalBytes}`)
  }
}

async function workloadUnixfsAdd (ctx) {
  const { opts } = ctx
  const totalBytes = await largeInput(opts)
  const started = performance.now()
  const cid = await addKubo(ctx, totalBytes)
  const seconds = (performance.now() - started) / 1000
  await verifyAddedFile(ctx, cid, totalBytes)
  const result = largeResult(opts, totalBytes, seconds, {})
  result.root_cid = cid.toString()
  return result
}

async function workloadCarExport (ctx) {
  const { opts } = ctx
  const totalBytes = await largeInput(opts)
  log(`untimed unixfs add of ${totalBytes} bytes from ${opts.input}`)
  const cid = await addKubo(ctx, totalBytes)
  await verifyAddedFile(ctx, cid, totalBytes)
  if (opts.coldExport) {
    // As ours does with --cold-export: the timed export starts from disk, not from the blocks
    // the buffered import (and its verification) left in the page cache.
    execFileSync('sync')
    try {
      writeFileSync('/proc/sys/vm/drop_caches', '1')
    } catch (e) {
      throw new UsageError(`--cold-export: cannot drop the page cache (writing 1 to /proc/sys/vm/drop_caches needs root): ${e.message}`)
    }
  }
  // The CAR is counted and dropped, as ours counts it: pure read + framing speed, no disk write.
  let carBytes = 0
  const started = performance.now()
  for await (const piece of car(ctx.helia).export(cid)) carBytes += piece.byteLength
  const seconds = (performance.now() - started) / 1000
  if (carBytes <= totalBytes) {
    throw new VerificationError(`car export of ${cid} gave ${carBytes} bytes, not more than the ${totalBytes}-byte file`)
  }
  const result = largeResult(opts, totalBytes, seconds, {})
  result.mb_per_s = Number((carBytes / seconds / 1e6).toFixed(3))
  result.root_cid = cid.toString()
  result.car_bytes = carBytes
  return result
}

async function verifyAgainstInput (opts, chunks, totalBytes) {
  const file = await fs.open(opts.input, 'r')
  try {
    let offset = 0
    for (const chunk of chunks) {
      const expected = Buffer.alloc(chunk.byteLength)
      const { bytesRead } = await file.read(expected, 0, chunk.byteLength, offset)
      if (bytesRead !== chunk.byteLength || !bytesEqual(chunk, expected)) {
        throw new VerificationError(`read-large: bytes at offset ${offset}..${offset + chunk.byteLength} differ from ${opts.input}`)
      }
      offset += chunk.byteLength
    }
    if (offset !== totalBytes) {
      throw new VerificationError(`read-large: read ${offset} bytes, expected ${totalBytes}`)
    }
  } finally {
    await file.close()
  }
}

async function workloadReadLarge (ctx) {
  const { opts } = ctx
  const totalBytes = await largeInput(opts)
  log(`untimed add of ${totalBytes} bytes from ${opts.input}`)
  const cid = await addLarge(ctx, totalBytes)
  // Chunks are kept (not copied) and compared after the clock stops, so the timed part is Helia's read alone.
  const chunks = []
  const started = performance.now()
  for await (const chunk of ctx.fs.cat(cid)) chunks.push(chunk)
  const seconds = (performance.now() - started) / 1000
  await verifyAgainstInput(opts, chunks, totalBytes)
  return largeResult(opts, totalBytes, seconds, {
    root_cid: cid.toString(),
    read_verification: 'cat output compared byte-for-byte with --input after timing; Helia itself does not re-hash local blocks on read'
  })
}

async function workloadPutDuringGc (ctx) {
  const { opts, helia } = ctx
  const rng = createRng(opts.seed)
  const fill = generateBlobs(rng, opts.count, opts.sizeBytes)
  const fresh = generateBlobs(rng, opts.count, opts.sizeBytes)
  log(`untimed fill of ${opts.count} blobs, pinning the even half`)
  const fillCids = await putBlobs(ctx, fill, undefined)
  // Helia's GC deletes every unpinned block, so "delete half" = leave the odd half unpinned and pin the even half.
  for (let i = 0; i < fillCids.length; i += 2) {
    for await (const _ of helia.pins.add(fillCids[i])) { /* drain */ }
  }
  const latenciesMs = new Float64Array(opts.count)
  let gcEndedMs
  let gcError
  const started = performance.now()
  const gc = helia.gc().then(() => { gcEndedMs = performance.now() }, (err) => { gcError = err })
  const freshCids = await putBlobs(ctx, fresh, latenciesMs)
  const putsEndedMs = performance.now()
  const seconds = (putsEndedMs - started) / 1000
  const gcFinishedDuringPuts = gcEndedMs !== undefined
  let timer
  const gcSettled = await Promise.race([
    gc.then(() => true),
    new Promise((resolve) => { timer = setTimeout(() => resolve(false), GC_WAIT_MS_MAX) })
  ])
  clearTimeout(timer)
  if (gcError !== undefined) throw new VerificationError(`helia.gc() failed: ${gcError.message}`)
  const gcFinished = gcSettled && gcEndedMs !== undefined
  let garbageLeft = 0
  for (let i = 0; i < fillCids.length; i++) {
    const present = await helia.blockstore.has(fillCids[i])
    if (i % 2 === 0 && !present) throw new VerificationError(`pinned blob ${i} (${fillCids[i]}) was deleted by gc`)
    if (i % 2 === 1 && present) garbageLeft++
  }
  if (gcFinished && garbageLeft > 0) {
    throw new VerificationError(`gc finished but ${garbageLeft} unpinned blobs are still present`)
  }
  let freshSurvived = 0
  for (const cid of freshCids) if (await helia.blockstore.has(cid)) freshSurvived++
  const result = smallResult(opts, seconds, latenciesMs, {
    gc: 'helia.gc(): takes the blockstore write lock, walks blockstore-fs getAll(), deletes every block without a pin record; puts take the read lock, so they queue behind it',
    gc_garbage_blobs: Math.floor(opts.count / 2),
    gc_pinned_blobs: Math.ceil(opts.count / 2),
    puts_during_gc_survived: freshSurvived
  })
  result.gc_finished = gcFinished
  result.gc_finished_before_last_put = gcFinishedDuringPuts
  result.gc_seconds = gcFinished ? Number(((gcEndedMs - started) / 1000).toFixed(6)) : null
  return result
}

function baseResult (opts, sizeBytes, count, seconds) {
  return {
    system: SYSTEM,
    workload: opts.workload,
    size_bytes: sizeBytes,
    count,
    inflight: opts.inflight,
    seconds: Number(seconds.toFixed(6)),
    ops_per_s: Number((count / seconds).toFixed(1)),
    mb_per_s: Number(((sizeBytes * count) / seconds / 1e6).toFixed(3))
  }
}

function smallResult (opts, seconds, latenciesMs, extraConfig) {
  return { ...baseResult(opts, opts.sizeBytes, opts.count, seconds), latency_us: latencySummaryUs(latenciesMs), extraConfig }
}

function largeResult (opts, totalBytes, seconds, extraConfig) {
  // One blob means one latency sample; the protocol's percentiles are not meaningful here, so none are invented.
  const result = { ...baseResult(opts, totalBytes, 1, seconds), latency_us: null, extraConfig }
  result.inflight = null
  return result
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  await fs.mkdir(opts.dir, { recursive: true })
  const blocksDir = path.join(opts.dir, 'blocks')
  const datastoreDir = path.join(opts.dir, 'datastore')
  const blockstoreInit = { shardingStrategy: new MultihashNextToLast() }
  const blockstore = opts.durable
    ? new FsyncingFsBlockstore(blocksDir, blockstoreInit)
    : new FsBlockstore(blocksDir, blockstoreInit)
  const datastore = new FsDatastore(datastoreDir)
  await blockstore.open()
  await datastore.open()
  if (opts.durable) {
    await fsyncPath(blocksDir)
    await fsyncPath(opts.dir)
  }
  const blake3 = await createBlake3Hasher()
  // createHeliaLight builds no libp2p node, no routers and no block brokers (createHelia would add libp2p, bitswap
  // and HTTP gateways), so every number below is storage work only.
  const helia = createHeliaLight({ blockstore, datastore, hashers: [blake3] })
  await helia.start()
  if (helia.libp2p !== undefined || helia.blockBrokers.length !== 0) {
    throw new Error('helia node has networking configured; refusing to benchmark it')
  }
  const ctx = { opts, helia, blake3, fs: unixfs(helia) }
  const run = {
    put: workloadPut,
    get: workloadGet,
    'add-large': workloadAddLarge,
    'read-large': workloadReadLarge,
    'put-during-gc': workloadPutDuringGc,
    'unixfs-add': workloadUnixfsAdd,
    'car-export': workloadCarExport
  }[opts.workload]
  let result
  try {
    result = await run(ctx)
  } finally {
    await helia.stop()
    await blockstore.close()
    await datastore.close()
  }
  const { extraConfig } = result
  delete result.extraConfig
  const [heliaVersion, blockstoreFsVersion, stenoVersion, datastoreFsVersion, unixfsVersion, importerVersion,
    hashWasmVersion, multiformatsVersion, carVersion, ipldCarVersion] = await Promise.all(['helia', 'blockstore-fs',
    'steno', 'datastore-fs', '@helia/unixfs', 'ipfs-unixfs-importer', 'hash-wasm', 'multiformats', '@helia/car',
    '@ipld/car'].map(packageVersion))
  const stenoWrite = `blockstore-fs ${blockstoreFsVersion} put = mkdir -p shard dir, then steno ${stenoVersion} Writer: ` +
    'fs.promises.writeFile(<shard>/.<name>.data.tmp) + rename() to <shard>/<name>.data, no fsync of file or directory'
  const durabilityModes = {
    default: `none: ack after rename, data only in the page cache (${stenoWrite})`,
    durable: 'fsync before ack: after blockstore-fs put returns, fsync(block file) + fsync(shard dir) + fsync(store ' +
      'root the first time a shard dir is used); the file is fsynced after its rename, so a crash before the ack ' +
      'can leave a short block file under its final name'
  }
  const isLarge = opts.workload === 'add-large' || opts.workload === 'read-large'
  result.durability = opts.durable ? durabilityModes.durable : durabilityModes.default
  result.config = {
    node: process.version,
    helia: `helia ${heliaVersion} createHeliaLight: libp2p not created, no routers, no block brokers`,
    blockstore: `blockstore-fs ${blockstoreFsVersion} at DIR/blocks (NextToLast sharding: 2-char dirs, base32upper multihash + .data)`,
    blockstore_decode_fix: 'file names decoded as multihash -> CIDv1 raw (stock decode assumes sha2-256 and breaks getAll/gc for BLAKE3, ipfs/js-stores#323); put/get/has paths unchanged',
    datastore: `datastore-fs ${datastoreFsVersion} at DIR/datastore (holds only the datastore version key and pins; same steno writes, no fsync)`,
    durable_flag: opts.durable,
    durability_modes: durabilityModes,
    cid: 'CIDv1, codec raw (0x55)',
    hasher: `blake3 (0x1e, 32 bytes) from hash-wasm ${hashWasmVersion} wrapped with multiformats ${multiformatsVersion} hasher.from; Helia's default hasher is sha2-256`,
    put_path: 'BLAKE3 digest + CID (timed) -> helia.blockstore.put: GC read lock -> has() -> blockstore-fs put',
    get_path: 'helia.blockstore.get: GC read lock -> has() -> open + read stream; bytes compared with what was put; Helia does not re-hash local blocks',
    seed: opts.seed,
    content: 'xoshiro128** (seeded by splitmix32 of --seed), little-endian u32 words, generated before timing',
    latency_clock: 'performance.now() per operation, submit -> ack, nearest-rank percentiles',
    concurrency: `${opts.inflight} concurrent promises (worker pool), one Node event loop`
  }
  if (isLarge) {
    result.config.large = {
      api: '@helia/unixfs ' + unixfsVersion + ' addByteStream (ipfs-unixfs-importer ' + importerVersion +
        '), cat for reads',
      input: opts.input,
      input_read_bytes: INPUT_READ_BYTES,
      raw_leaves: true,
      cid_version: 1,
      chunk_bytes: opts.chunkBytes,
      chunk_note: '@helia/unixfs 8 would default to 1 MiB chunks; the importer alone and Kubo default to 256 KiB',
      layout: 'balanced, 1024 links per node (@helia/unixfs default)',
      block_write_concurrency: '10 (importer default)',
      hasher: opts.largeHasher === 'sha2-256'
        ? 'sha2-256 for every block: ipfs-unixfs-importer hard-codes it (persist.js) and takes no hasher option'
        : 'blake3-leaves: raw leaves hashed with BLAKE3 through the importer\'s bufferImporter option; the dag-pb interior nodes are still sha2-256 (hard-coded)'
    }
  }
  if (KUBO_WORKLOADS.includes(opts.workload)) {
    result.config.unixfs = {
      import: `@helia/unixfs ${unixfsVersion} addByteStream (ipfs-unixfs-importer ${importerVersion}) of --input read ` +
        `with ${INPUT_READ_BYTES}-byte reads; timed until the root CID is returned (with --durable every block put ` +
        'has been fsynced by then); size checked with stat after the clock stops',
      import_options: `Kubo defaults: cidVersion 1, rawLeaves, fixedSize ${KUBO_CHUNK_BYTES}, balanced ` +
        `maxChildrenPerNode ${KUBO_LINKS_PER_NODE_MAX}, reduceSingleLeafToSelf, sha2-256 (hard-coded by the importer)`,
      block_write_concurrency: '10 (importer default)',
      car_export: `@helia/car ${carVersion} car(helia).export(root) (@ipld/car ${ipldCarVersion} CarWriter, ` +
        'UnixFSExporter depth-first walk); pieces counted and dropped, no disk write; Helia does not re-hash local blocks on read'
    }
  }
  Object.assign(result.config, extraConfig)
  process.stdout.write(JSON.stringify(result) + '\n')
}

main().then(() => {
  process.exit(0)
}, (err) => {
  if (err instanceof UsageError) {
    process.stderr.write(`helia harness: ${err.message}\n`)
    process.exit(2)
  }
  if (err instanceof VerificationError) {
    process.stderr.write(`helia harness: verification failed: ${err.message}\n`)
    process.exit(1)
  }
  process.stderr.write(`helia harness: ${err.stack ?? err}\n`)
  process.exit(1)
})
