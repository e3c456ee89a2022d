// Fetches ipfs://CID with @helia/verified-fetch on an HTTP-only Helia node whose only block source is GATEWAY
// (trustless gateway: GET /ipfs/{cid}?format=raw per block), so every byte is hash-verified by IPFS's own client.
//
//   node --import ./polyfill.mjs verified-fetch.mjs --gateway URL --cid CID [--expect-sha256 HEX] [--blake3]
//        [--timeout-ms N]
//
// stdout: {"ok":true,"status":200,"size_bytes":N,"sha256":HEX[,"blake3":HEX],"content_type":...}
//         {"ok":false,"error":...} when the gateway's data fails verification, the fetch fails or the digest differs.
// --blake3 also reports the BLAKE3-256 of the body. Exit 0 ok, 1 failure, 2 usage error.

import { createHash } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import { withHTTP } from '@helia/http'
import { createVerifiedFetchWithHelia } from '@helia/verified-fetch'
import { defaultLogger } from '@libp2p/logger'
import { createBLAKE3 } from 'hash-wasm'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import {
  UsageError, VerificationError, createBlake3Hasher, log, parseArgs, parseHex32, parsePositiveInt, requireArg, runMain
} from './lib.mjs'

const NAME = 'verified-fetch'
const USAGE = 'verified-fetch.mjs --gateway URL --cid CID [--expect-sha256 HEX] [--blake3] [--timeout-ms N]'
// Long enough for a 1 GiB file over loopback one 256 KiB block at a time; a wedged fetch still ends.
const TIMEOUT_MS_DEFAULT = 120_000
// How much of an error response body to quote in the failure message.
const ERROR_BODY_CHARS_MAX = 500

// Helia's routing only falls through to the fallback router (the one that names our gateway) after every
// non-fallback router has finished; with none at all it waits forever. This router has no providers and says so.
const noProvidersRouter = {
  name: 'no-providers',
  async * findProviders () {},
  toString: () => 'NoProvidersRouter()'
}

// Helia 7 does not fail a fetch whose block fails verification: it logs InvalidMultihashError, looks for another
// provider, finds none and waits until the caller's signal aborts. This component logger passes everything to the
// normal (DEBUG=...) logger and tells us about such errors so the script fails at once and says why.
function invalidBlockWatchingLogger (onInvalidBlock) {
  const base = defaultLogger()
  const isInvalidMultihash = (a) => a?.name === 'InvalidMultihashError' ||
    (Array.isArray(a?.errors) && a.errors.some(isInvalidMultihash))
  const wrap = (log) => {
    const error = log.error
    log.error = (...args) => {
      if (args.some(isInvalidMultihash)) onInvalidBlock(args.find((a) => CID.asCID(a) !== null) ?? null)
      error(...args)
    }
    const newScope = log.newScope
    log.newScope = (scope) => wrap(newScope(scope))
    return log
  }
  return { forComponent: (name) => wrap(base.forComponent(name)) }
}

function parse (argv) {
  const args = parseArgs(argv, {
    '--gateway': 'string', '--cid': 'string', '--expect-sha256': 'string', '--blake3': 'bool', '--timeout-ms': 'string'
  }, USAGE)
  const gateway = requireArg(args, 'gateway', USAGE)
  let url
  try {
    url = new URL(gateway)
  } catch {
    throw new UsageError(`--gateway is not a URL: ${JSON.stringify(gateway)}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--gateway must be http(s), got ${gateway}`)
  // The trustless-gateway client replaces the URL's path with /ipfs/{cid}, so a path prefix would be silently lost.
  if (url.pathname !== '/' || url.search !== '') throw new UsageError(`--gateway must be an origin without a path, got ${gateway}`)
  const cidText = requireArg(args, 'cid', USAGE)
  let cid
  try {
    cid = CID.parse(cidText)
  } catch (err) {
    throw new UsageError(`--cid ${JSON.stringify(cidText)} does not parse: ${err.message}`)
  }
  return {
    gateway: url.origin,
    cid,
    expectSha256: args['expect-sha256'] === undefined ? undefined : parseHex32('--expect-sha256', args['expect-sha256']),
    blake3: args.blake3 === true,
    timeoutMs: args['timeout-ms'] === undefined ? TIMEOUT_MS_DEFAULT : parsePositiveInt('--timeout-ms', args['timeout-ms'])
  }
}

async function main () {
  const opts = parse(process.argv.slice(2))
  // A ref'd timer (AbortSignal.timeout's is unref'd: with Helia waiting on nothing but it, Node would drain the
  // event loop and exit 0 without an answer).
  const controller = new AbortController()
  // Helia adds one abort listener per block request in flight; Node's default cap of 10 only produces a warning.
  setMaxListeners(Infinity, controller.signal)
  const timer = setTimeout(() => controller.abort(new VerificationError(`no answer within ${opts.timeoutMs} ms`)), opts.timeoutMs)
  let invalidBlock
  const logger = invalidBlockWatchingLogger((cid) => {
    if (invalidBlock !== undefined && (invalidBlock.cid !== null || cid === null)) return
    invalidBlock = { cid }
    // Later log lines of the same failure name the CID; let them arrive before aborting.
    setImmediate(() => controller.abort(new VerificationError(
      `gateway served block ${invalidBlock.cid ?? '(unnamed)'} whose bytes do not hash to its CID (Helia: InvalidMultihashError)`)))
  })
  const helia = createHeliaLight({ hashers: [await createBlake3Hasher()], logger })
  withHTTP(helia, {
    delegatedRouters: [],
    recursiveGateways: [opts.gateway],
    allowLocal: true,
    allowInsecure: true
  })
  helia.addRouter(noProvidersRouter)
  if (helia.libp2p !== undefined) throw new Error('expected an HTTP-only Helia node, but it has libp2p')
  await helia.start()
  const verifiedFetch = await createVerifiedFetchWithHelia(helia)
  try {
    return await fetchAndHash(verifiedFetch, opts, controller.signal)
  } catch (err) {
    // Whatever Helia made of the abort, the reason we aborted is the message worth reporting.
    if (controller.signal.aborted && controller.signal.reason instanceof VerificationError) throw controller.signal.reason
    throw err
  } finally {
    clearTimeout(timer)
    await verifiedFetch.stop()
    await helia.stop()
  }
}

async function fetchAndHash (verifiedFetch, opts, signal) {
  const url = `ipfs://${opts.cid}`
  log(NAME, `fetching ${url} via ${opts.gateway}`)
  let response
  try {
    response = await verifiedFetch(url, {
      signal,
      allowLocal: true,
      allowInsecure: true
    })
  } catch (err) {
    throw new VerificationError(`fetch of ${url} failed: ${err.message}`)
  }
  if (!response.ok) {
    const body = (await response.text().catch((err) => `(body unreadable: ${err.message})`)).slice(0, ERROR_BODY_CHARS_MAX)
    throw new VerificationError(`fetch of ${url} answered HTTP ${response.status}: ${body}`)
  }
  const sha256 = createHash('sha256')
  const blake3 = opts.blake3 ? await createBLAKE3(256) : undefined
  blake3?.init()
  let sizeBytes = 0
  try {
    // Streamed so a 1 GiB file is hashed without being held in memory; verification errors surface here.
    for await (const chunk of response.body ?? []) {
      sha256.update(chunk)
      blake3?.update(chunk)
      sizeBytes += chunk.length
    }
  } catch (err) {
    throw new VerificationError(`reading the body of ${url} failed after ${sizeBytes} bytes: ${err.message}`)
  }
  const result = {
    ok: true,
    status: response.status,
    size_bytes: sizeBytes,
    sha256: sha256.digest('hex'),
    content_type: response.headers.get('content-type')
  }
  if (blake3 !== undefined) result.blake3 = blake3.digest('hex')
  if (opts.expectSha256 !== undefined && result.sha256 !== opts.expectSha256) {
    throw new VerificationError(`sha256 of the body is ${result.sha256}, expected ${opts.expectSha256} (${sizeBytes} bytes)`)
  }
  return result
}

runMain(NAME, main)
