// Imports a file with ipfs-unixfs-importer using Kubo's `ipfs add --cid-version 1` parameters (the same options as
// gen-vectors.mjs) and writes the DAG as a CARv1 in DFS pre-order, root first: what `ipfs dag export` gives.
//
//   node --import ./polyfill.mjs kubo-car.mjs --input FILE --output OUT.car [--chunk-size-bytes N]
//
// stdout: {"ok":true,"root":CID,"size_bytes":N,"blocks":N,"sha256":HEX}. Exit 0 ok, 1 failure, 2 usage error.

import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CarWriter } from '@ipld/car/writer'
import * as dagPb from '@ipld/dag-pb'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { importer } from 'ipfs-unixfs-importer'
import { kuboImporterOptions } from './gen-vectors.mjs'
import { CODEC_DAG_PB, UsageError, log, parseArgs, parsePositiveInt, requireArg, runMain } from './lib.mjs'

const NAME = 'kubo-car'
const USAGE = 'kubo-car.mjs --input FILE --output OUT.car [--chunk-size-bytes N]'
const KUBO_CHUNK_SIZE_BYTES = 262144

async function getBlock (blockstore, cid) {
  const parts = []
  for await (const part of blockstore.get(cid)) parts.push(part)
  return Buffer.concat(parts)
}

async function main () {
  const args = parseArgs(process.argv.slice(2), { '--input': 'string', '--output': 'string', '--chunk-size-bytes': 'string' }, USAGE)
  const input = requireArg(args, 'input', USAGE)
  const output = requireArg(args, 'output', USAGE)
  const chunkSizeBytes = args['chunk-size-bytes'] === undefined
    ? KUBO_CHUNK_SIZE_BYTES
    : parsePositiveInt('--chunk-size-bytes', args['chunk-size-bytes'])
  let sizeBytes
  try {
    sizeBytes = (await stat(input)).size
  } catch (err) {
    throw new UsageError(`--input ${input}: ${err.message}`)
  }
  const blockstore = new MemoryBlockstore()
  let root
  for await (const entry of importer([{ content: createReadStream(input) }], blockstore, kuboImporterOptions(chunkSizeBytes))) {
    root = entry.cid
  }
  const { writer, out } = CarWriter.create([root])
  const written = pipeline(Readable.from(out), createWriteStream(output))
  const seen = new Set()
  let blocks = 0
  // Iterative DFS pre-order; children pushed last-first so they come out in link order.
  const stack = [root]
  while (stack.length > 0) {
    const cid = stack.pop()
    if (seen.has(cid.toString())) continue
    seen.add(cid.toString())
    const bytes = await getBlock(blockstore, cid)
    await writer.put({ cid, bytes })
    blocks++
    if (cid.code === CODEC_DAG_PB) {
      const links = dagPb.decode(bytes).Links
      for (let i = links.length - 1; i >= 0; i--) stack.push(links[i].Hash)
    }
  }
  await writer.close()
  await written
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(input)) hash.update(chunk)
  const sha256 = hash.digest('hex')
  log(NAME, `${input} -> ${output}: root ${root}, ${blocks} blocks`)
  return { ok: true, root: root.toString(), size_bytes: sizeBytes, blocks, sha256 }
}

runMain(NAME, main)
