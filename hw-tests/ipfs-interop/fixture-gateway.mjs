// A tiny trustless gateway for testing the interop scripts before the Metanode gateway exists. It documents the
// responses the scripts expect (see README.md "Responses the scripts expect"). Loopback only.
//
//   node --import ./polyfill.mjs fixture-gateway.mjs [--car FILE]... [--raw-blake3 FILE]... [--port N]
//        [--corrupt CID]... [--omit CID]... [--reverse-order]
//
// Serves GET/HEAD /ipfs/{cid} with ?format=raw|car or Accept: application/vnd.ipld.raw|car (format wins), CAR with
// dag-scope=block|entity|all, entity-bytes=from:to and dups=y|n from the Accept header (default n), DFS pre-order.
// Misbehaviour switches for negative tests: --corrupt flips one byte of a block, --omit drops it (raw: 404, CAR:
// stream cut where it would be), --reverse-order sends a CAR's non-root blocks in reverse order.
// Prints one JSON line {"url":...,"blocks":N,"roots":[...],"raw_blake3":[{"file":...,"cid":...}]} once
// listening, then serves until SIGINT/SIGTERM.

import { createReadStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import http from 'node:http'
import { Readable } from 'node:stream'
import { CarBlockIterator } from '@ipld/car'
import { CarWriter } from '@ipld/car/writer'
import * as dagPb from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
import { base32 } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import {
  CODEC_DAG_PB, CODEC_RAW, MULTIHASH_IDENTITY, UsageError, createBlake3Hasher, log, parseArgs
} from './lib.mjs'

const NAME = 'fixture-gateway'
const USAGE = 'fixture-gateway.mjs [--car FILE]... [--raw-blake3 FILE]... [--port N] [--corrupt CID]... [--omit CID]... [--reverse-order]'
const HOST = '127.0.0.1'
const IMMUTABLE_CACHE_CONTROL = 'public, max-age=29030400, immutable'

class MissingBlockError extends Error {}

const keyOf = (cid) => base32.encode(cid.multihash.bytes)

function parseCidArg (flag, text) {
  try {
    return CID.parse(text)
  } catch (err) {
    throw new UsageError(`${flag} ${text}: ${err.message}`)
  }
}

async function loadBlocks (opts) {
  const blocks = new Map()
  const roots = []
  for (const file of opts.car ?? []) {
    const iter = await CarBlockIterator.fromIterable(createReadStream(file))
    roots.push(...(await iter.getRoots()).map((c) => c.toString()))
    for await (const { cid, bytes } of iter) blocks.set(keyOf(cid), bytes)
  }
  const rawBlake3 = []
  const blake3 = await createBlake3Hasher()
  for (const file of opts['raw-blake3'] ?? []) {
    const bytes = await readFile(file)
    const cid = CID.createV1(raw.code, await blake3.digest(bytes))
    blocks.set(keyOf(cid), new Uint8Array(bytes))
    rawBlake3.push({ file, cid: cid.toString() })
  }
  for (const text of opts.corrupt ?? []) {
    const cid = parseCidArg('--corrupt', text)
    const bytes = blocks.get(keyOf(cid))
    if (bytes === undefined) throw new UsageError(`--corrupt ${cid}: no such block`)
    const copy = Uint8Array.from(bytes.length > 0 ? bytes : [0])
    copy[copy.length >> 1] ^= 0x01
    blocks.set(keyOf(cid), copy)
  }
  for (const text of opts.omit ?? []) blocks.delete(keyOf(parseCidArg('--omit', text)))
  return { blocks, roots, rawBlake3 }
}

function getBlock (blocks, cid) {
  if (cid.multihash.code === MULTIHASH_IDENTITY) return cid.multihash.digest
  return blocks.get(keyOf(cid))
}

// entity-bytes "from:to" resolved against the entity's size; null when nothing of the entity is selected.
function resolveRange (spec, sizeBytes) {
  const from = spec.from < 0 ? Math.max(0, sizeBytes + spec.from) : spec.from
  const toRaw = spec.to === '*' ? sizeBytes - 1 : (spec.to < 0 ? sizeBytes + spec.to : spec.to)
  const to = Math.min(toRaw, sizeBytes - 1)
  return from > to || from >= sizeBytes ? null : { from, to }
}

// Yields the blocks of the requested scope in DFS pre-order. range: bytes of this node's entity still wanted.
function * walk (blocks, cid, req, range, seen) {
  if (cid.multihash.code === MULTIHASH_IDENTITY) return
  if (req.dups === 'n' && seen.has(keyOf(cid))) return
  const bytes = getBlock(blocks, cid)
  if (bytes === undefined) throw new MissingBlockError(`block ${cid} is not here`)
  seen.add(keyOf(cid))
  yield { cid, bytes }
  if (req.scope === 'block' || cid.code !== CODEC_DAG_PB) return
  const node = dagPb.decode(bytes)
  if (req.scope === 'all') {
    for (const link of node.Links) yield * walk(blocks, link.Hash, req, null, seen)
    return
  }
  if (node.Data === undefined) return
  const unixfs = UnixFS.unmarshal(node.Data)
  if (unixfs.type === 'hamt-sharded-directory') {
    for (const link of node.Links) if ((link.Name ?? '').length === 2) yield * walk(blocks, link.Hash, req, null, seen)
    return
  }
  if (unixfs.type !== 'file' && unixfs.type !== 'raw') return
  let offset = unixfs.data?.length ?? 0
  for (const [i, link] of node.Links.entries()) {
    const start = offset
    const end = start + Number(unixfs.blockSizes[i]) - 1
    offset = end + 1
    if (range !== null && (end < range.from || start > range.to)) continue
    const sub = range === null ? null : { from: Math.max(range.from, start) - start, to: Math.min(range.to, end) - start }
    yield * walk(blocks, link.Hash, req, sub, seen)
  }
}

function entitySizeBytes (cid, bytes) {
  if (cid.code === CODEC_RAW) return bytes.length
  if (cid.code !== CODEC_DAG_PB) return null
  const node = dagPb.decode(bytes)
  if (node.Data === undefined) return null
  const unixfs = UnixFS.unmarshal(node.Data)
  return unixfs.type === 'file' || unixfs.type === 'raw' ? Number(unixfs.fileSize()) : null
}

function fail (res, status, message) {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' })
  res.end(message + '\n')
}

function pickFormat (url, accept) {
  const format = url.searchParams.get('format')
  if (format !== null) return format
  if (accept.includes('application/vnd.ipld.raw')) return 'raw'
  if (accept.includes('application/vnd.ipld.car')) return 'car'
  return null
}

async function handle (state, opts, req, res) {
  const url = new URL(req.url, `http://${HOST}`)
  const m = /^\/ipfs\/([^/]+)$/.exec(url.pathname)
  if (m === null) return fail(res, 404, 'fixture serves /ipfs/{cid} only')
  if (req.method !== 'GET' && req.method !== 'HEAD') return fail(res, 405, 'GET or HEAD')
  let cid
  try {
    cid = CID.parse(m[1])
  } catch (err) {
    return fail(res, 400, `bad CID: ${err.message}`)
  }
  const accept = req.headers.accept ?? ''
  const format = pickFormat(url, accept)
  if (format !== 'raw' && format !== 'car') return fail(res, 400, 'trustless only: ask for format=raw|car')
  const rootBytes = getBlock(state.blocks, cid)
  if (rootBytes === undefined) return fail(res, 404, `block ${cid} not found`)
  const common = {
    'Cache-Control': IMMUTABLE_CACHE_CONTROL,
    'X-Content-Type-Options': 'nosniff',
    'X-Ipfs-Path': `/ipfs/${cid}`,
    Vary: 'Accept'
  }
  if (format === 'raw') {
    res.writeHead(200, {
      ...common,
      'Content-Type': 'application/vnd.ipld.raw',
      'Content-Length': rootBytes.length,
      'Content-Disposition': `attachment; filename="${cid}.bin"`,
      ETag: `"${cid}.raw"`
    })
    return res.end(req.method === 'HEAD' ? undefined : rootBytes)
  }
  const scope = url.searchParams.get('dag-scope') ?? 'all'
  if (!['block', 'entity', 'all'].includes(scope)) return fail(res, 400, `bad dag-scope ${scope}`)
  const ebText = url.searchParams.get('entity-bytes')
  let range = null
  let effectiveScope = scope
  if (ebText !== null) {
    const eb = /^(-?\d+):(-?\d+|\*)$/.exec(ebText)
    if (eb === null) return fail(res, 400, `bad entity-bytes ${ebText}`)
    effectiveScope = 'entity'
    const size = entitySizeBytes(cid, rootBytes)
    if (size !== null) {
      range = resolveRange({ from: Number(eb[1]), to: eb[2] === '*' ? '*' : Number(eb[2]) }, size)
      if (range === null) effectiveScope = 'block'
    }
  }
  const dupsParam = /application\/vnd\.ipld\.car[^,]*dups=([yn])/.exec(accept)
  const dups = dupsParam === null ? 'n' : dupsParam[1]
  res.writeHead(200, {
    ...common,
    'Content-Type': `application/vnd.ipld.car; version=1; order=dfs; dups=${dups}`,
    'Content-Disposition': `attachment; filename="${cid}.car"`,
    ETag: `"${cid}.car.${scope}${ebText === null ? '' : '.' + ebText}.dfs.dups-${dups}"`
  })
  if (req.method === 'HEAD') return res.end()
  const { writer, out } = CarWriter.create([cid])
  const piped = new Promise((resolve, reject) => Readable.from(out).on('error', reject).pipe(res).on('finish', resolve))
  try {
    let list = walk(state.blocks, cid, { scope: effectiveScope, dups }, range, new Set())
    if (opts['reverse-order'] === true) {
      const all = [...list]
      list = [all[0], ...all.slice(1).reverse()]
    }
    for (const block of list) await writer.put(block)
    await writer.close()
    await piped
  } catch (err) {
    if (!(err instanceof MissingBlockError)) throw err
    // Already committed to 200: the spec says cut the stream; the client must notice the CAR is incomplete.
    log(NAME, `${err.message}; cutting the CAR stream`)
    await writer.close()
    await piped
  }
}

async function main () {
  const opts = parseArgs(process.argv.slice(2), {
    '--car': 'list', '--raw-blake3': 'list', '--port': 'string', '--corrupt': 'list', '--omit': 'list', '--reverse-order': 'bool'
  }, USAGE)
  const port = opts.port === undefined ? 0 : Number(opts.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be 0..65535, got ${opts.port}`)
  const state = await loadBlocks(opts)
  const server = http.createServer((req, res) => {
    handle(state, opts, req, res).catch((err) => {
      log(NAME, `${req.url}: ${err.stack}`)
      if (!res.headersSent) fail(res, 500, err.message)
      else res.destroy()
    })
  })
  await new Promise((resolve) => server.listen(port, HOST, resolve))
  const url = `http://${HOST}:${server.address().port}`
  log(NAME, `serving ${state.blocks.size} blocks on ${url}`)
  process.stdout.write(JSON.stringify({ url, blocks: state.blocks.size, roots: state.roots, raw_blake3: state.rawBlake3 }) + '\n')
  await new Promise((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  server.close()
  server.closeAllConnections()
  return null
}

main().catch((err) => {
  log(NAME, err.message)
  process.exit(err instanceof UsageError ? 2 : 1)
})
