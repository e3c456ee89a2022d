// Golden UnixFS vectors for agent/unixfs: root CIDs that `ipfs add --cid-version 1` (Kubo's legacy defaults) gives,
// computed with the reference JS importer (ipfs-unixfs-importer, pinned in package.json).
//
//   node gen-vectors.mjs > ../../agent/unixfs/tests/vectors/unixfs_kubo.json
//
// Prints the JSON array on stdout, progress on stderr. Exit 0 ok, 1 self-check failed, 2 usage error.

import { MemoryBlockstore } from 'blockstore-core/memory'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const KIB = 1024
const MIB = 1024 * KIB
// Kubo's defaults for `ipfs add`: `--chunker size-262144`, balanced layout with helpers.DefaultLinksPerBlock = 174.
const KUBO_CHUNK_SIZE_BYTES = 256 * KIB
const KUBO_LINKS_PER_BLOCK = 174
// What `ipfs add --cid-version 1` prints for an empty file (sha2-256 of nothing, raw codec).
const KUBO_EMPTY_FILE_CID = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'

// Seeds are 1 + index in this list, so append new vectors at the end to keep existing ones stable.
const VECTORS = [
  { name: 'empty', size_bytes: 0, chunk_size_bytes: KUBO_CHUNK_SIZE_BYTES },
  { name: 'one_byte', size_bytes: 1, chunk_size_bytes: KUBO_CHUNK_SIZE_BYTES },
  { name: 'one_chunk', size_bytes: KUBO_CHUNK_SIZE_BYTES, chunk_size_bytes: KUBO_CHUNK_SIZE_BYTES },
  { name: 'one_chunk_plus_one', size_bytes: KUBO_CHUNK_SIZE_BYTES + 1, chunk_size_bytes: KUBO_CHUNK_SIZE_BYTES },
  { name: 'chunks_174', size_bytes: 174 * KUBO_CHUNK_SIZE_BYTES, chunk_size_bytes: KUBO_CHUNK_SIZE_BYTES },
  { name: 'chunks_175', size_bytes: 175 * KUBO_CHUNK_SIZE_BYTES, chunk_size_bytes: KUBO_CHUNK_SIZE_BYTES },
  { name: 'large_64MiB', size_bytes: 64 * MIB, chunk_size_bytes: KUBO_CHUNK_SIZE_BYTES },
  // 174*174 leaves fill a 2-level tree exactly; one more byte forces a third level.
  { name: 'depth3_small_chunks', size_bytes: 174 * 174 * KIB + 1, chunk_size_bytes: KIB },
  { name: 'chunk_1024_odd', size_bytes: 100000, chunk_size_bytes: KIB },
  { name: 'chunk_1MiB_3MiB_plus_5', size_bytes: 3 * MIB + 5, chunk_size_bytes: MIB }
]

class UsageError extends Error {}
class VerificationError extends Error {}

// xorshift32 (Marsaglia 13/17/5), each state emitted as 4 little-endian bytes; the Rust tests regenerate the same bytes.
export function xorshift32Bytes (seed, sizeBytes) {
  if (!Number.isInteger(seed) || seed <= 0 || seed > 0xffffffff) {
    throw new UsageError(`seed must be a nonzero u32, got ${seed}`)
  }
  const out = new Uint8Array(sizeBytes)
  let x = seed >>> 0
  for (let off = 0; off < sizeBytes; off += 4) {
    x = (x ^ (x << 13)) >>> 0
    x = (x ^ (x >>> 17)) >>> 0
    x = (x ^ (x << 5)) >>> 0
    for (let k = 0; k < 4 && off + k < sizeBytes; k++) out[off + k] = (x >>> (8 * k)) & 0xff
  }
  return out
}

// Kubo's `ipfs add --cid-version 1` (with no Import.* config overrides): CIDv1, raw leaves (implied by
// --cid-version 1 unless --raw-leaves=false), fixed-size chunker, balanced DAG with 174 links per node, sha2-256,
// a one-chunk file is just its raw leaf, no wrapping directory, no mtime/mode.
export function kuboImporterOptions (chunkSizeBytes) {
  return {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
    chunker: fixedSize({ chunkSize: chunkSizeBytes }),
    layout: balanced({ maxChildrenPerNode: KUBO_LINKS_PER_BLOCK })
  }
}

// Counts the distinct blocks the importer writes (it may put the same CID twice).
class CountingBlockstore extends MemoryBlockstore {
  cids = new Set()
  async put (cid, bytes, options) {
    this.cids.add(cid.toString())
    return super.put(cid, bytes, options)
  }
}

async function importBytes (bytes, chunkSizeBytes) {
  const blockstore = new CountingBlockstore()
  let last
  // One source entry with no path: the importer yields exactly one entry, the file itself.
  for await (const entry of importer([{ content: [bytes] }], blockstore, kuboImporterOptions(chunkSizeBytes))) {
    last = entry
  }
  if (last === undefined) throw new VerificationError('importer yielded no entry')
  if (last.cid.multihash.code !== 0x12) {
    throw new VerificationError(`root ${last.cid} is not sha2-256 (multihash code ${last.cid.multihash.code})`)
  }
  return { rootCid: last.cid.toString(), blocksCount: blockstore.cids.size }
}

async function main () {
  if (process.argv.length > 2) throw new UsageError(`gen-vectors.mjs takes no arguments, got ${process.argv.slice(2).join(' ')}`)
  const out = []
  for (const [index, v] of VECTORS.entries()) {
    const seed = 1 + index
    const started = Date.now()
    const { rootCid, blocksCount } = await importBytes(xorshift32Bytes(seed, v.size_bytes), v.chunk_size_bytes)
    out.push({
      name: v.name,
      size_bytes: v.size_bytes,
      seed,
      chunk_size_bytes: v.chunk_size_bytes,
      root_cid: rootCid,
      blocks_count: blocksCount
    })
    process.stderr.write(`${v.name}: ${rootCid} blocks=${blocksCount} (${Date.now() - started} ms)\n`)
  }
  const empty = out.find((v) => v.name === 'empty')
  if (empty.root_cid !== KUBO_EMPTY_FILE_CID) {
    throw new VerificationError(`empty file gave ${empty.root_cid}, Kubo gives ${KUBO_EMPTY_FILE_CID}`)
  }
  process.stdout.write('[\n' + out.map((v) => '  ' + JSON.stringify(v)).join(',\n') + '\n]\n')
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    process.stderr.write(`gen-vectors: ${err.message}\n`)
    process.exit(err instanceof UsageError ? 2 : 1)
  })
}
