// Packs a file into a CARv1 with the `ipfs-car` package's library API (createFileEncoderStream/
// createDirectoryEncoderStream + CAREncoderStream, the same calls as its `ipfs-car pack` CLI), then reads the CAR
// back to report the DAG parameters ipfs-car actually used.
//
//   node --import ./polyfill.mjs ipfs-car-pack.mjs --input FILE --output OUT.car [--wrap]
//
// Default is the file itself as root (like `ipfs-car pack FILE --no-wrap`); --wrap puts it in a directory named
// after the file, which is what `ipfs-car pack FILE` does by default.
// stdout: {"ok":true,"root":CID,"size_bytes":N,"car_bytes":N,"blocks":N,"wrapped":bool,
//          "observed":{"leaf_bytes_max":N,"links_per_node_max":N,"leaf_codecs":[...],"multihashes":[...],
//                      "order":"leaves-before-parents"|"other"}}
// Exit 0 ok, 1 failure, 2 usage error.

import { createReadStream } from 'node:fs'
import { open, stat } from 'node:fs/promises'
import path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { createWriteStream } from 'node:fs'
import { CarBlockIterator } from '@ipld/car'
import { CarWriter } from '@ipld/car/writer'
import * as dagPb from '@ipld/dag-pb'
import { CAREncoderStream, createDirectoryEncoderStream, createFileEncoderStream } from 'ipfs-car'
import { CID } from 'multiformats/cid'
import {
  CODEC_DAG_PB, UsageError, VerificationError, createBlockVerifier, log, parseArgs, requireArg, runMain
} from './lib.mjs'

const NAME = 'ipfs-car-pack'
const USAGE = 'ipfs-car-pack.mjs --input FILE --output OUT.car [--wrap]'
// ipfs-car's CLI writes this placeholder root first and patches the header in place once the root is known; the
// real root has the same encoded length (CIDv1, 32-byte sha2-256), so the header keeps its size.
const PLACEHOLDER_ROOT = CID.parse('bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi')

function parse (argv) {
  const args = parseArgs(argv, { '--input': 'string', '--output': 'string', '--wrap': 'bool' }, USAGE)
  return { input: requireArg(args, 'input', USAGE), output: requireArg(args, 'output', USAGE), wrap: args.wrap === true }
}

async function pack (opts) {
  const file = {
    name: path.basename(opts.input),
    stream: () => Readable.toWeb(createReadStream(opts.input))
  }
  const blockStream = opts.wrap ? createDirectoryEncoderStream([file]) : createFileEncoderStream(file)
  const carStream = new CAREncoderStream([PLACEHOLDER_ROOT])
  await blockStream.pipeThrough(carStream).pipeTo(Writable.toWeb(createWriteStream(opts.output)))
  // ipfs-car emits the root last: leaves and inner nodes stream out as soon as they are complete.
  const root = carStream.finalBlock?.cid
  if (root === undefined || root === null) throw new VerificationError('ipfs-car produced no blocks')
  const fd = await open(opts.output, 'r+')
  try {
    await CarWriter.updateRootsInFile(fd, [root])
  } finally {
    await fd.close()
  }
  return root
}

// Reads the CAR back: verifies each block and measures what ipfs-car did (leaf size, fan-out, codecs, order).
async function observe (output, root) {
  const verifyBlock = await createBlockVerifier()
  const blocks = await CarBlockIterator.fromIterable(createReadStream(output))
  const roots = (await blocks.getRoots()).map((c) => c.toString())
  if (roots.length !== 1 || roots[0] !== root.toString()) throw new VerificationError(`CAR header roots ${JSON.stringify(roots)}, expected [${root}]`)
  const seen = new Set()
  let leavesBeforeParents = true
  let leafBytesMax = 0
  let linksPerNodeMax = 0
  const leafCodecs = new Set()
  const multihashes = new Set()
  let count = 0
  let lastCid
  for await (const { cid, bytes } of blocks) {
    await verifyBlock(cid, bytes)
    multihashes.add(`0x${cid.multihash.code.toString(16)}`)
    if (cid.code === CODEC_DAG_PB) {
      const node = dagPb.decode(bytes)
      linksPerNodeMax = Math.max(linksPerNodeMax, node.Links.length)
      if (node.Links.some((l) => !seen.has(l.Hash.toString()))) leavesBeforeParents = false
      if (node.Links.length === 0) leafCodecs.add('dag-pb')
    } else {
      leafCodecs.add(`0x${cid.code.toString(16)}`)
      leafBytesMax = Math.max(leafBytesMax, bytes.length)
    }
    seen.add(cid.toString())
    lastCid = cid
    count++
  }
  if (lastCid === undefined || !lastCid.equals(root)) leavesBeforeParents = false
  return {
    blocks: count,
    observed: {
      leaf_bytes_max: leafBytesMax,
      links_per_node_max: linksPerNodeMax,
      leaf_codecs: [...leafCodecs],
      multihashes: [...multihashes],
      order: leavesBeforeParents ? 'leaves-before-parents' : 'other'
    }
  }
}

async function main () {
  const opts = parse(process.argv.slice(2))
  let sizeBytes
  try {
    sizeBytes = (await stat(opts.input)).size
  } catch (err) {
    throw new UsageError(`--input ${opts.input}: ${err.message}`)
  }
  const root = await pack(opts)
  const carBytes = (await stat(opts.output)).size
  log(NAME, `${opts.input} (${sizeBytes} bytes) -> ${opts.output}: root ${root}`)
  const { blocks, observed } = await observe(opts.output, root)
  return { ok: true, root: root.toString(), size_bytes: sizeBytes, car_bytes: carBytes, blocks, wrapped: opts.wrap, observed }
}

runMain(NAME, main)
