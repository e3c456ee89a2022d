// Checks a trustless-gateway CAR response (GET /ipfs/{cid}?format=car) against the spec: headers, every block's
// hash, and that the blocks are exactly the DFS pre-order walk of the requested scope (nothing missing, nothing
// extra, nothing out of order). Then reads the content back with ipfs-unixfs-exporter from the CAR's blocks alone.
//
//   node --import ./polyfill.mjs gateway-car-check.mjs --gateway URL --cid CID [--dag-scope block|entity|all]
//        [--entity-bytes from:to] [--dups y|n] [--via both|format|accept] [--expect-sha256 HEX] [--timeout-ms N]
//
// stdout: {"ok":true,"blocks":N,"content_type":...,"etag":...,"dups":"n","roots":[...],"cids":[first few],
//          "content_bytes":N|null,"content_sha256":HEX|null}
// content_* are the bytes the exporter reads (the entity-bytes range, or the whole file) when the root is a UnixFS
// file and the scope includes its data; null otherwise. --expect-sha256 compares content_sha256.
// --via: how CAR is asked for: both ?format=car and Accept (default), only the query, or only the Accept header.
// Exit 0 ok, 1 verification failure (message names the header / block / position), 2 usage error.

import { createHash } from 'node:crypto'
import { CarBlockIterator } from '@ipld/car'
import * as dagPb from '@ipld/dag-pb'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { UnixFS } from 'ipfs-unixfs'
import { exporter } from 'ipfs-unixfs-exporter'
import { CID } from 'multiformats/cid'
import {
  CODEC_DAG_PB, CODEC_RAW, MULTIHASH_IDENTITY, UsageError, VerificationError, createBlockVerifier, log, parseArgs,
  parseHex32, parsePositiveInt, requireArg, runMain
} from './lib.mjs'

const NAME = 'gateway-car-check'
const USAGE = 'gateway-car-check.mjs --gateway URL --cid CID [--dag-scope block|entity|all] [--entity-bytes from:to] ' +
  '[--dups y|n] [--via both|format|accept] [--expect-sha256 HEX] [--timeout-ms N]'
const SCOPES = ['block', 'entity', 'all']
const VIAS = ['both', 'format', 'accept']
const TIMEOUT_MS_DEFAULT = 120_000
// How many CIDs (in CAR order) to echo back, enough to eyeball the order in a failing test.
const CIDS_SHOWN_MAX = 5
// UnixFS HAMT shard links are named by a 2-hex-digit bucket prefix alone; longer names point at directory entries.
const HAMT_SHARD_LINK_NAME_CHARS = 2

function parseRangeEnd (flag, text, allowStar) {
  if (allowStar && text === '*') return '*'
  if (!/^-?[0-9]+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`${flag}: ${JSON.stringify(text)} is not an integer${allowStar ? ' or *' : ''}`)
  }
  return Number(text)
}

function parse (argv) {
  const args = parseArgs(argv, {
    '--gateway': 'string',
    '--cid': 'string',
    '--dag-scope': 'string',
    '--entity-bytes': 'string',
    '--dups': 'string',
    '--via': 'string',
    '--expect-sha256': 'string',
    '--timeout-ms': 'string'
  }, USAGE)
  const gateway = requireArg(args, 'gateway', USAGE)
  let url
  try {
    url = new URL(gateway)
  } catch {
    throw new UsageError(`--gateway is not a URL: ${JSON.stringify(gateway)}`)
  }
  const cidText = requireArg(args, 'cid', USAGE)
  let cid
  try {
    cid = CID.parse(cidText)
  } catch (err) {
    throw new UsageError(`--cid ${JSON.stringify(cidText)} does not parse: ${err.message}`)
  }
  let scope = args['dag-scope']
  if (scope !== undefined && !SCOPES.includes(scope)) throw new UsageError(`--dag-scope must be one of ${SCOPES.join('|')}`)
  let entityBytes
  if (args['entity-bytes'] !== undefined) {
    const m = /^(-?[0-9]+):(-?[0-9]+|\*)$/.exec(args['entity-bytes'])
    if (m === null) throw new UsageError(`--entity-bytes must be from:to (integers, to may be *), got ${args['entity-bytes']}`)
    entityBytes = { from: parseRangeEnd('--entity-bytes', m[1], false), to: parseRangeEnd('--entity-bytes', m[2], true) }
    // The spec: entity-bytes implies dag-scope=entity.
    if (scope !== undefined && scope !== 'entity') throw new UsageError('--entity-bytes only goes with --dag-scope entity')
    scope = 'entity'
  }
  const dups = args.dups ?? 'n'
  if (dups !== 'y' && dups !== 'n') throw new UsageError(`--dups must be y or n, got ${dups}`)
  const via = args.via ?? 'both'
  if (!VIAS.includes(via)) throw new UsageError(`--via must be one of ${VIAS.join('|')}`)
  return {
    base: url,
    cid,
    scope,
    entityBytes,
    dups,
    via,
    expectSha256: args['expect-sha256'] === undefined ? undefined : parseHex32('--expect-sha256', args['expect-sha256']),
    timeoutMs: args['timeout-ms'] === undefined ? TIMEOUT_MS_DEFAULT : parsePositiveInt('--timeout-ms', args['timeout-ms'])
  }
}

function requestUrl (opts) {
  const url = new URL(opts.base.toString())
  url.pathname = `${url.pathname.replace(/\/$/, '')}/ipfs/${opts.cid}`
  const params = new URLSearchParams()
  if (opts.via !== 'accept') params.set('format', 'car')
  if (opts.scope !== undefined) params.set('dag-scope', opts.scope)
  if (opts.entityBytes !== undefined) params.set('entity-bytes', `${opts.entityBytes.from}:${opts.entityBytes.to}`)
  url.search = params.toString()
  return url
}

// "application/vnd.ipld.car; version=1; order=dfs; dups=n" -> { type, params }
function parseContentType (value) {
  const [type, ...rest] = value.split(';').map((s) => s.trim())
  const params = {}
  for (const p of rest) {
    const eq = p.indexOf('=')
    if (eq > 0) params[p.slice(0, eq).trim().toLowerCase()] = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1')
  }
  return { type: type.toLowerCase(), params }
}

function checkHeaders (response, opts) {
  if (response.status !== 200) throw new VerificationError(`HTTP status ${response.status}, expected 200`)
  const contentType = response.headers.get('content-type')
  if (contentType === null) throw new VerificationError('response has no Content-Type')
  const ct = parseContentType(contentType)
  if (ct.type !== 'application/vnd.ipld.car') throw new VerificationError(`Content-Type is ${contentType}, expected application/vnd.ipld.car`)
  if (ct.params.version !== '1') throw new VerificationError(`Content-Type ${contentType} lacks version=1 (MUST per spec)`)
  // We always ask for order=dfs; without it in the answer the order is "unk" and could not be checked.
  if (ct.params.order !== 'dfs') throw new VerificationError(`Content-Type ${contentType} lacks order=dfs`)
  if (ct.params.dups !== 'y' && ct.params.dups !== 'n') {
    throw new VerificationError(`Content-Type ${contentType} lacks dups=y|n (MUST when the gateway knows it)`)
  }
  if (opts.via !== 'format' && ct.params.dups !== opts.dups) {
    throw new VerificationError(`asked for dups=${opts.dups} in Accept, Content-Type says dups=${ct.params.dups}`)
  }
  const etag = response.headers.get('etag')
  if (etag === null || !/^(W\/)?"[^"]+"$/.test(etag)) throw new VerificationError(`ETag ${JSON.stringify(etag)} is missing or not a quoted entity tag`)
  const disposition = response.headers.get('content-disposition')
  if (disposition === null || !/^attachment\b/i.test(disposition)) {
    throw new VerificationError(`Content-Disposition ${JSON.stringify(disposition)} is not "attachment" (MUST per spec)`)
  }
  return { contentType, dups: ct.params.dups, etag }
}

// The byte range [from, to] (inclusive) that entity-bytes selects in an entity of sizeBytes, or null when it
// selects nothing (then the answer must equal dag-scope=block).
export function resolveEntityBytes (range, sizeBytes) {
  let from = range.from < 0 ? Math.max(0, sizeBytes + range.from) : range.from
  let to = range.to === '*' ? sizeBytes - 1 : (range.to < 0 ? sizeBytes + range.to : range.to)
  to = Math.min(to, sizeBytes - 1)
  from = Math.max(from, 0)
  if (sizeBytes === 0 || from > to || from >= sizeBytes) return null
  return { from, to }
}

// Children of a just-received block that the scope requires, in link order, each with the byte range (relative
// to that child) it must cover, or range null for "all of it".
function childrenInScope (cid, bytes, scope, range, isRoot, entityBytes) {
  if (scope === 'block') return []
  if (cid.code === CODEC_RAW) return []
  if (cid.code !== CODEC_DAG_PB) {
    if (scope === 'all') throw new VerificationError(`block ${cid}: codec 0x${cid.code.toString(16)} cannot be walked by this checker`)
    return []
  }
  const node = dagPb.decode(bytes)
  if (scope === 'all') return node.Links.map((l) => ({ cid: l.Hash, range: null }))
  // dag-scope=entity: blocks needed to read a whole UnixFS file, or to enumerate a UnixFS directory.
  if (node.Data === undefined) return []
  const unixfs = UnixFS.unmarshal(node.Data)
  if (unixfs.type === 'hamt-sharded-directory') {
    return node.Links.filter((l) => (l.Name ?? '').length === HAMT_SHARD_LINK_NAME_CHARS).map((l) => ({ cid: l.Hash, range: null }))
  }
  if (unixfs.type !== 'file' && unixfs.type !== 'raw') return []
  if (isRoot && entityBytes !== undefined) {
    range = resolveEntityBytes(entityBytes, Number(unixfs.fileSize()))
    if (range === null) return []
  }
  if (range === null) return node.Links.map((l) => ({ cid: l.Hash, range: null }))
  if (unixfs.blockSizes.length !== node.Links.length) {
    throw new VerificationError(`block ${cid}: UnixFS blocksizes has ${unixfs.blockSizes.length} entries for ${node.Links.length} links`)
  }
  // A file node's own data (if any) comes before its children's.
  let offset = unixfs.data?.length ?? 0
  const out = []
  node.Links.forEach((link, i) => {
    const start = offset
    const end = offset + Number(unixfs.blockSizes[i]) - 1
    offset = end + 1
    if (end < range.from || start > range.to) return
    out.push({ cid: link.Hash, range: { from: Math.max(range.from, start) - start, to: Math.min(range.to, end) - start } })
  })
  return out
}

async function readAndCheckCar (body, opts, blockstore) {
  const verifyBlock = await createBlockVerifier()
  let blocks
  try {
    blocks = await CarBlockIterator.fromIterable(body)
  } catch (err) {
    throw new VerificationError(`CAR header does not decode: ${err.message}`)
  }
  if (blocks.version !== 1) throw new VerificationError(`CAR version is ${blocks.version}, Content-Type said version=1`)
  const roots = (await blocks.getRoots()).map((c) => c.toString())
  // DFS pre-order as a stack of expected blocks; a received block's in-scope children go on top, last link first.
  const stack = [{ cid: opts.cid, range: null, isRoot: true }]
  const seen = new Set()
  const nextExpected = () => {
    while (stack.length > 0) {
      const e = stack.pop()
      // Identity blocks are inside their CID: the spec forbids sending them.
      if (e.cid.multihash.code === MULTIHASH_IDENTITY) continue
      if (opts.dups === 'n' && seen.has(e.cid.toString())) continue
      return e
    }
    return undefined
  }
  const cids = []
  let position = 0
  try {
    for await (const { cid, bytes } of blocks) {
      const expected = nextExpected()
      if (expected === undefined) throw new VerificationError(`unexpected extra block ${cid} at position ${position}: the scope is complete`)
      if (!cid.equals(expected.cid)) {
        throw new VerificationError(`block at position ${position} is ${cid}, DFS pre-order of the scope expects ${expected.cid}`)
      }
      await verifyBlock(cid, bytes)
      seen.add(cid.toString())
      await blockstore.put(cid, bytes)
      const children = childrenInScope(cid, bytes, opts.scope ?? 'all', expected.range, expected.isRoot === true, opts.entityBytes)
      for (let i = children.length - 1; i >= 0; i--) stack.push(children[i])
      if (cids.length < CIDS_SHOWN_MAX) cids.push(cid.toString())
      position++
    }
  } catch (err) {
    if (err instanceof VerificationError) throw err
    throw new VerificationError(`CAR stream broke after ${position} blocks: ${err.message}`)
  }
  const missing = nextExpected()
  if (missing !== undefined) {
    throw new VerificationError(`CAR incomplete for dag-scope=${opts.scope ?? 'all'}: missing block ${missing.cid} at position ${position}`)
  }
  return { roots, blocks: position, cids }
}

// Reads the file back through the exporter from the CAR's blocks only: proves the CAR is enough to serve it.
async function exportContent (opts, blockstore) {
  if ((opts.scope ?? 'all') === 'block') return { content_bytes: null, content_sha256: null }
  const entry = await exporter(opts.cid, blockstore)
  if (entry.type !== 'file' && entry.type !== 'raw') return { content_bytes: null, content_sha256: null }
  let readOptions = {}
  if (opts.entityBytes !== undefined) {
    const range = resolveEntityBytes(opts.entityBytes, Number(entry.size))
    if (range === null) return { content_bytes: 0, content_sha256: createHash('sha256').digest('hex') }
    readOptions = { offset: range.from, length: range.to - range.from + 1 }
  }
  const hash = createHash('sha256')
  let contentBytes = 0
  try {
    for await (const chunk of entry.content(readOptions)) {
      hash.update(chunk)
      contentBytes += chunk.length
    }
  } catch (err) {
    throw new VerificationError(`ipfs-unixfs-exporter could not read the content from the CAR's blocks: ${err.message}`)
  }
  return { content_bytes: contentBytes, content_sha256: hash.digest('hex') }
}

async function main () {
  const opts = parse(process.argv.slice(2))
  const url = requestUrl(opts)
  const headers = {}
  if (opts.via !== 'format') headers.Accept = `application/vnd.ipld.car; version=1; order=dfs; dups=${opts.dups}`
  log(NAME, `GET ${url} ${headers.Accept ?? ''}`)
  let response
  try {
    response = await fetch(url, { headers, signal: AbortSignal.timeout(opts.timeoutMs) })
  } catch (err) {
    throw new VerificationError(`GET ${url} failed: ${err.message}`)
  }
  const { contentType, dups, etag } = checkHeaders(response, opts)
  const blockstore = new MemoryBlockstore()
  const car = await readAndCheckCar(response.body, { ...opts, dups }, blockstore)
  const content = await exportContent(opts, blockstore)
  if (opts.expectSha256 !== undefined && content.content_sha256 !== opts.expectSha256) {
    throw new VerificationError(`content sha256 is ${content.content_sha256}, expected ${opts.expectSha256}`)
  }
  return { ok: true, blocks: car.blocks, content_type: contentType, etag, dups, roots: car.roots, cids: car.cids, ...content }
}

if (import.meta.url === `file://${process.argv[1]}`) runMain(NAME, main)
