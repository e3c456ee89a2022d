// Shared plumbing for the interop scripts: argument parsing, the one-JSON-line output protocol, block hashers.
//
// Protocol for every script: arguments on the command line, ONE JSON line on stdout (also on failure:
// {"ok":false,"error":...}), diagnostics on stderr; exit 0 ok, 1 verification failure or runtime error, 2 usage error.

import { createHash } from 'node:crypto'
import { createBLAKE3 } from 'hash-wasm'
import { identity } from 'multiformats/hashes/identity'
import { from as hasherFrom } from 'multiformats/hashes/hasher'
import { sha256 } from 'multiformats/hashes/sha2'

export const MULTIHASH_SHA2_256 = 0x12
export const MULTIHASH_BLAKE3 = 0x1e
export const MULTIHASH_IDENTITY = 0x00
export const CODEC_RAW = 0x55
export const CODEC_DAG_PB = 0x70
// Multihash length we expect for both supported hashes; a CID with another length cannot match our store's blocks.
export const DIGEST_BYTES = 32

export class UsageError extends Error {}
export class VerificationError extends Error {}

// spec: { '--flag': 'string' | 'bool' | 'list' }. Returns { flag: value } keyed by the flag without dashes.
export function parseArgs (argv, spec, usage) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]
    const kind = spec[flag]
    if (kind === undefined) throw new UsageError(`unknown argument ${JSON.stringify(flag)}; usage: ${usage}`)
    const key = flag.slice(2)
    if (kind === 'bool') {
      out[key] = true
      continue
    }
    const value = argv[i + 1]
    if (value === undefined) throw new UsageError(`${flag} needs a value; usage: ${usage}`)
    i++
    if (kind === 'list') {
      out[key] = [...(out[key] ?? []), value]
    } else {
      if (out[key] !== undefined) throw new UsageError(`${flag} given twice`)
      out[key] = value
    }
  }
  return out
}

export function requireArg (args, key, usage) {
  if (args[key] === undefined) throw new UsageError(`--${key} is required; usage: ${usage}`)
  return args[key]
}

export function parseHex32 (flag, value) {
  if (!/^[0-9a-f]{64}$/i.test(value)) throw new UsageError(`${flag} needs 64 hex digits, got ${JSON.stringify(value)}`)
  return value.toLowerCase()
}

export function parsePositiveInt (flag, value) {
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
    throw new UsageError(`${flag} needs a positive integer, got ${JSON.stringify(value)}`)
  }
  return Number(value)
}

export function log (name, msg) {
  process.stderr.write(`${name}: ${msg}\n`)
}

// Runs main(); prints its result (or the error) as the one stdout line and sets the exit code.
export function runMain (name, main) {
  let answered = false
  const answer = (obj, code) => {
    answered = true
    process.stdout.write(JSON.stringify(obj) + '\n')
    process.exitCode = code
  }
  // If main's promise never settles and nothing else keeps the event loop alive, Node exits 0 without a word;
  // a test must never read that as success.
  process.exitCode = 1
  process.on('beforeExit', () => {
    if (!answered) {
      log(name, 'FAILED: event loop drained without an answer (a promise never settled)')
      answer({ ok: false, error: 'no answer: the event loop drained while waiting (a promise never settled)' }, 1)
    }
  })
  main().then((result) => {
    answer(result, result.ok === false ? 1 : 0)
  }, (err) => {
    const usage = err instanceof UsageError
    log(name, `${usage ? 'usage error' : 'FAILED'}: ${err.message}`)
    if (!usage && !(err instanceof VerificationError) && err.stack) log(name, err.stack)
    answer({ ok: false, error: err.message }, usage ? 2 : 1)
  }).finally(() => {
    // libp2p/undici keep-alive timers must not hold the process open once the answer is printed.
    setTimeout(() => process.exit(), 50).unref()
  })
}

// hash-wasm's BLAKE3 wrapped as a multiformats hasher; init/update/digest are synchronous, so one wasm instance
// is safe to share between concurrent promises.
export async function createBlake3Hasher () {
  const wasm = await createBLAKE3(256)
  return hasherFrom({
    name: 'blake3',
    code: MULTIHASH_BLAKE3,
    encode: (bytes) => {
      wasm.init()
      wasm.update(bytes)
      return wasm.digest('binary')
    }
  })
}

export function sha256Hex (bytes) {
  return createHash('sha256').update(bytes).digest('hex')
}

// Verifies that bytes hash to cid's multihash. Throws VerificationError naming the CID.
export async function createBlockVerifier () {
  const blake3 = await createBlake3Hasher()
  const hashers = new Map([[MULTIHASH_SHA2_256, sha256], [MULTIHASH_BLAKE3, blake3], [MULTIHASH_IDENTITY, identity]])
  return async function verifyBlock (cid, bytes) {
    const hasher = hashers.get(cid.multihash.code)
    if (hasher === undefined) {
      throw new VerificationError(`block ${cid}: unsupported multihash code 0x${cid.multihash.code.toString(16)}`)
    }
    const digest = await hasher.digest(bytes)
    if (!equalBytes(digest.bytes, cid.multihash.bytes)) {
      throw new VerificationError(`block ${cid}: bytes do not hash to the CID (${hasher.name}, ${bytes.length} bytes)`)
    }
  }
}

export function equalBytes (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
