// Reads a CAR file (v1 or v2) block by block with @ipld/car and checks that every block's bytes hash to its CID
// (sha2-256, BLAKE3, identity).
//
//   node --import ./polyfill.mjs car-read.mjs --car FILE [--expect-root CID] [--expect-blocks N]
//
// stdout: {"ok":true,"version":1,"roots":[...],"blocks":N,"unique_blocks":N,"bytes":N,"cids":[first few],
//          "codecs":{"raw":N,"dag-pb":N,...},"multihashes":{"sha2-256":N,"blake3":N}}
// Exit 0 ok, 1 verification failure (names the CID / what differs), 2 usage error.

import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { CarBlockIterator } from '@ipld/car'
import { CID } from 'multiformats/cid'
import {
  CODEC_DAG_PB, CODEC_RAW, MULTIHASH_BLAKE3, MULTIHASH_IDENTITY, MULTIHASH_SHA2_256, UsageError, VerificationError,
  createBlockVerifier, log, parseArgs, parsePositiveInt, requireArg, runMain
} from './lib.mjs'

const NAME = 'car-read'
const USAGE = 'car-read.mjs --car FILE [--expect-root CID] [--expect-blocks N]'
const CIDS_SHOWN_MAX = 5
const CODEC_NAMES = new Map([[CODEC_RAW, 'raw'], [CODEC_DAG_PB, 'dag-pb'], [0x71, 'dag-cbor'], [0x0129, 'dag-json']])
const MULTIHASH_NAMES = new Map([[MULTIHASH_SHA2_256, 'sha2-256'], [MULTIHASH_BLAKE3, 'blake3'], [MULTIHASH_IDENTITY, 'identity']])

function parse (argv) {
  const args = parseArgs(argv, { '--car': 'string', '--expect-root': 'string', '--expect-blocks': 'string' }, USAGE)
  const out = { car: requireArg(args, 'car', USAGE) }
  if (args['expect-root'] !== undefined) {
    try {
      out.expectRoot = CID.parse(args['expect-root'])
    } catch (err) {
      throw new UsageError(`--expect-root does not parse: ${err.message}`)
    }
  }
  if (args['expect-blocks'] !== undefined) out.expectBlocks = parsePositiveInt('--expect-blocks', args['expect-blocks'])
  return out
}

const countInto = (map, key) => { map[key] = (map[key] ?? 0) + 1 }

async function main () {
  const opts = parse(process.argv.slice(2))
  try {
    await stat(opts.car)
  } catch (err) {
    throw new UsageError(`--car ${opts.car}: ${err.message}`)
  }
  const verifyBlock = await createBlockVerifier()
  let blocks
  try {
    blocks = await CarBlockIterator.fromIterable(createReadStream(opts.car))
  } catch (err) {
    throw new VerificationError(`${opts.car}: CAR header does not decode: ${err.message}`)
  }
  const roots = (await blocks.getRoots()).map((c) => c.toString())
  const unique = new Set()
  const cids = []
  const codecs = {}
  const multihashes = {}
  let count = 0
  let bytesTotal = 0
  try {
    for await (const { cid, bytes } of blocks) {
      await verifyBlock(cid, bytes)
      unique.add(cid.toString())
      countInto(codecs, CODEC_NAMES.get(cid.code) ?? `0x${cid.code.toString(16)}`)
      countInto(multihashes, MULTIHASH_NAMES.get(cid.multihash.code) ?? `0x${cid.multihash.code.toString(16)}`)
      if (cids.length < CIDS_SHOWN_MAX) cids.push(cid.toString())
      count++
      bytesTotal += bytes.length
    }
  } catch (err) {
    if (err instanceof VerificationError) throw err
    throw new VerificationError(`${opts.car}: CAR stream broke after ${count} blocks: ${err.message}`)
  }
  log(NAME, `${opts.car}: CARv${blocks.version}, ${count} blocks verified`)
  if (opts.expectRoot !== undefined && !(roots.length === 1 && roots[0] === opts.expectRoot.toString())) {
    throw new VerificationError(`roots are ${JSON.stringify(roots)}, expected [${opts.expectRoot}]`)
  }
  if (opts.expectRoot !== undefined && !unique.has(opts.expectRoot.toString())) {
    throw new VerificationError(`root ${opts.expectRoot} is named in the header but its block is not in the CAR`)
  }
  if (opts.expectBlocks !== undefined && count !== opts.expectBlocks) {
    throw new VerificationError(`CAR has ${count} blocks, expected ${opts.expectBlocks}`)
  }
  return {
    ok: true,
    version: blocks.version,
    roots,
    blocks: count,
    unique_blocks: unique.size,
    bytes: bytesTotal,
    cids,
    codecs,
    multihashes
  }
}

runMain(NAME, main)
