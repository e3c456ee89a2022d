// Golden UnixFS vectors for agent/unixfs: root CIDs that `ipfs add --cid-version 1` gives, or with
// `--cid-version 0` what plain `ipfs add` (Kubo's defaults: CIDv0, dag-pb leaves) gives, computed with the
// reference JS importer (ipfs-unixfs-importer, pinned in package.json).
//
//   node gen-vectors.mjs > ../../agent/unixfs/tests/vectors/unixfs_kubo.json
//   node gen-vectors.mjs --cid-version 0 > ../../agent/unixfs/tests/vectors/unixfs_kubo_v0.json
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
// What plain `ipfs add` prints for an empty file: the dag-pb node {Data: {Type: File, filesize: 0}}.
const KUBO_EMPTY_FILE_CID_V0 = 'QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH'
// With --cid-version 0, vectors of at most this many blocks also list every block (CID, size, and the bytes
// in hex when they are short), so the Rust tests compare whole blocks and not only roots.
const BLOCKS_LISTED_COUNT_MAX = 3
const BLOCK_HEX_SIZE_BYTES_MAX = 128

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
// With cidVersion 0 (plain `ipfs add`): CIDv0 for every block and dag-pb leaves {Data: {Type: File, Data: chunk,
// filesize}} (leafType 'file'), since a raw leaf needs CIDv1.
export function kuboImporterOptions (chunkSizeBytes, cidVersion = 1) {
  return {
    cidVersion,
    rawLeaves: cidVersion === 1,
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
    chunker: fixedSize({ chunkSize: chunkSizeBytes }),
    layout: balanced({ maxChildrenPerNode: KUBO_LINKS_PER_BLOCK })
  }
}

// Counts the distinct blocks the importer writes (it may put the same CID twice) and keeps the first few.
class CountingBlockstore extends MemoryBlockstore {
  cids = new Set()
  kept = new Map()
  async put (cid, bytes, options) {
    const key = cid.toString()
    this.cids.add(key)
    if (this.kept.size < BLOCKS_LISTED_COUNT_MAX + 1) this.kept.set(key, bytes)
    return super.put(cid, bytes, options)
  }
}

// Every CID in the DAG must have the import's version (CIDv0 links stay CIDv0 all the way down).
function checkVersions (blockstoreCids, cidVersion) {
  for (const cid of blockstoreCids) {
    const isV0 = cid.startsWith('Qm')
    if (isV0 !== (cidVersion === 0)) throw new VerificationError(`block ${cid} is not a CIDv${cidVersion}`)
  }
}

async function importBytes (bytes, chunkSizeBytes, cidVersion) {
  const blockstore = new CountingBlockstore()
  let last
  // One source entry with no path: the importer yields exactly one entry, the file itself.
  for await (const entry of importer([{ content: [bytes] }], blockstore, kuboImporterOptions(chunkSizeBytes, cidVersion))) {
    last = entry
  }
  if (last === undefined) throw new VerificationError('importer yielded no entry')
  if (last.cid.multihash.code !== 0x12) {
    throw new VerificationError(`root ${last.cid} is not sha2-256 (multihash code ${last.cid.multihash.code})`)
  }
  if (cidVersion === 0) checkVersions(blockstore.cids, cidVersion)
  let blocks
  if (cidVersion === 0 && blockstore.cids.size <= BLOCKS_LISTED_COUNT_MAX) {
    blocks = [...blockstore.kept.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([cid, data]) => {
        const block = { cid, size_bytes: data.length }
        if (data.length <= BLOCK_HEX_SIZE_BYTES_MAX) block.hex = Buffer.from(data).toString('hex')
        return block
      })
  }
  return { rootCid: last.cid.toString(), blocksCount: blockstore.cids.size, blocks }
}

function parseArgs (argv) {
  if (argv.length === 0) return { cidVersion: 1 }
  if (argv.length === 2 && argv[0] === '--cid-version' && (argv[1] === '0' || argv[1] === '1')) {
    return { cidVersion: Number(argv[1]) }
  }
  throw new UsageError(`usage: gen-vectors.mjs [--cid-version 0|1], got ${argv.join(' ')}`)
}

async function main () {
  const { cidVersion } = parseArgs(process.argv.slice(2))
  const out = []
  for (const [index, v] of VECTORS.entries()) {
    const seed = 1 + index
    const started = Date.now()
    const { rootCid, blocksCount, blocks } = await importBytes(xorshift32Bytes(seed, v.size_bytes), v.chunk_size_bytes, cidVersion)
    const vector = {
      name: v.name,
      size_bytes: v.size_bytes,
      seed,
      chunk_size_bytes: v.chunk_size_bytes,
      root_cid: rootCid,
      blocks_count: blocksCount
    }
    if (blocks !== undefined) vector.blocks = blocks
    out.push(vector)
    process.stderr.write(`${v.name}: ${rootCid} blocks=${blocksCount} (${Date.now() - started} ms)\n`)
  }
  const empty = out.find((v) => v.name === 'empty')
  const emptyExpected = cidVersion === 0 ? KUBO_EMPTY_FILE_CID_V0 : KUBO_EMPTY_FILE_CID
  if (empty.root_cid !== emptyExpected) {
    throw new VerificationError(`empty file gave ${empty.root_cid}, Kubo gives ${emptyExpected}`)
  }
  process.stdout.write('[\n' + out.map((v) => '  ' + JSON.stringify(v)).join(',\n') + '\n]\n')
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    process.stderr.write(`gen-vectors: ${err.message}\n`)
    process.exit(err instanceof UsageError ? 2 : 1)
  })
}
