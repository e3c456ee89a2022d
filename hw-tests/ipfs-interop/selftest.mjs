// End-to-end test of the interop scripts against fixture-gateway.mjs on 127.0.0.1 (no other network traffic):
// every script's success path with concrete expected values, and the failure paths (corrupt block, missing block,
// wrong order, wrong digest, bad arguments) with the exit code and the name of what failed.
//
//   node --import ./polyfill.mjs selftest.mjs
//
// stdout: {"ok":true,"checks":N} or {"ok":false,"failures":[...]}. Exit 0 / 1.

import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { CID } from 'multiformats/cid'
import { xorshift32Bytes } from './gen-vectors.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const KIB = 1024
const MIB = 1024 * KIB
// Small leaves so a 200 000-byte file needs two levels (196 leaves > 174 links): exercises entity-bytes pruning.
const SMALL_CHUNK_BYTES = KIB
const SCRIPT_TIMEOUT_MS = 180_000

const failures = []
let checks = 0

function expect (cond, what, detail) {
  checks++
  if (!cond) {
    failures.push(`${what}${detail === undefined ? '' : ': ' + JSON.stringify(detail)}`)
    process.stderr.write(`selftest: FAIL ${what}\n`)
  }
}

function run (script, args) {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', './polyfill.mjs', script, ...args], { cwd: HERE, timeout: SCRIPT_TIMEOUT_MS, maxBuffer: 16 * MIB },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : (typeof err.code === 'number' ? err.code : -1)
        const lines = stdout.trim().split('\n')
        let json = null
        try {
          json = JSON.parse(lines[lines.length - 1])
        } catch {}
        process.stderr.write(`selftest: ${script} ${args.join(' ')} -> exit ${code}\n`)
        resolve({ code, json, stdout, stderr, lines: lines.length })
      })
  })
}

// Starts fixture-gateway.mjs and waits for its one JSON line.
async function startFixture (args) {
  const child = spawn(process.execPath, ['--import', './polyfill.mjs', 'fixture-gateway.mjs', ...args], { cwd: HERE, stdio: ['ignore', 'pipe', 'inherit'] })
  const rl = createInterface({ input: child.stdout })
  const line = await new Promise((resolve, reject) => {
    rl.once('line', resolve)
    child.once('exit', (code) => reject(new Error(`fixture-gateway exited ${code} before listening`)))
  })
  return { child, info: JSON.parse(line) }
}

async function stopFixture (fixture) {
  const exited = new Promise((resolve) => fixture.child.once('exit', resolve))
  fixture.child.kill('SIGTERM')
  await exited
}

const sha256Hex = (bytes) => createHash('sha256').update(bytes).digest('hex')

async function main () {
  const dir = await mkdtemp(path.join(tmpdir(), 'ipfs-interop-selftest-'))
  const fixtures = []
  try {
    const f1 = path.join(dir, 'f1.bin')
    const f2 = path.join(dir, 'f2.bin')
    const f3 = path.join(dir, 'f3.bin')
    const f1Bytes = xorshift32Bytes(11, 3 * MIB + 5)
    const f2Bytes = xorshift32Bytes(12, 200000)
    const f3Bytes = xorshift32Bytes(13, MIB)
    await writeFile(f1, f1Bytes)
    await writeFile(f2, f2Bytes)
    await writeFile(f3, f3Bytes)

    // --- CAR producers -------------------------------------------------------------------------------------
    const k1 = await run('kubo-car.mjs', ['--input', f1, '--output', path.join(dir, 'k1.car')])
    expect(k1.code === 0 && k1.json.blocks === 14 && k1.json.sha256 === sha256Hex(f1Bytes), 'kubo-car f1: 13 raw leaves + root', k1.json)
    const k2 = await run('kubo-car.mjs', ['--input', f2, '--output', path.join(dir, 'k2.car'), '--chunk-size-bytes', String(SMALL_CHUNK_BYTES)])
    // 196 leaves over 174 links: 2 inner nodes + root.
    expect(k2.code === 0 && k2.json.blocks === 199, 'kubo-car f2: 196 leaves + 2 inner + root', k2.json)
    const p1 = await run('ipfs-car-pack.mjs', ['--input', f1, '--output', path.join(dir, 'p1.car')])
    expect(p1.code === 0 && p1.json.blocks === 5 && p1.json.observed.leaf_bytes_max === MIB &&
      p1.json.observed.order === 'leaves-before-parents' && p1.json.root !== k1.json.root,
    'ipfs-car f1: 1 MiB raw leaves, root last, root differs from Kubo params', p1.json)
    const p1w = await run('ipfs-car-pack.mjs', ['--input', f1, '--output', path.join(dir, 'p1w.car'), '--wrap'])
    expect(p1w.code === 0 && p1w.json.blocks === 6 && p1w.json.wrapped === true, 'ipfs-car --wrap adds a directory block', p1w.json)

    // --- car-read ------------------------------------------------------------------------------------------
    const r1 = await run('car-read.mjs', ['--car', path.join(dir, 'k1.car'), '--expect-root', k1.json.root, '--expect-blocks', '14'])
    expect(r1.code === 0 && r1.json.ok === true && r1.json.codecs.raw === 13 && r1.json.codecs['dag-pb'] === 1, 'car-read kubo CAR', r1.json)
    const rp = await run('car-read.mjs', ['--car', path.join(dir, 'p1.car'), '--expect-root', p1.json.root])
    expect(rp.code === 0 && rp.json.blocks === 5, 'car-read ipfs-car CAR', rp.json)
    const carBytes = await readFile(path.join(dir, 'k1.car'))
    carBytes[carBytes.length - 10] ^= 0x01 // inside the last block's data
    await writeFile(path.join(dir, 'k1-bad.car'), carBytes)
    const rb = await run('car-read.mjs', ['--car', path.join(dir, 'k1-bad.car')])
    expect(rb.code === 1 && rb.json.ok === false && /block baf[a-z0-9]+: bytes do not hash/.test(rb.json.error), 'car-read names the corrupt block', rb.json)
    const ru = await run('car-read.mjs', [])
    expect(ru.code === 2, 'car-read usage error exits 2', ru.json)

    // --- healthy fixture -----------------------------------------------------------------------------------
    const good = await startFixture(['--car', path.join(dir, 'k1.car'), '--car', path.join(dir, 'k2.car'),
      '--car', path.join(dir, 'p1.car'), '--raw-blake3', f3])
    fixtures.push(good)
    const url = good.info.url
    const blake3Cid = good.info.raw_blake3[0].cid
    expect(blake3Cid.startsWith('bafkr4i'), 'fixture made a raw BLAKE3 CID', blake3Cid)

    const v3 = await run('verified-fetch.mjs', ['--gateway', url, '--cid', blake3Cid, '--blake3', '--expect-sha256', sha256Hex(f3Bytes)])
    const blake3Digest = Buffer.from(CID.parse(blake3Cid).multihash.digest).toString('hex')
    expect(v3.code === 0 && v3.json.size_bytes === MIB && v3.json.blake3 === blake3Digest, 'verified-fetch raw BLAKE3 block', v3.json)
    const v1 = await run('verified-fetch.mjs', ['--gateway', url, '--cid', k1.json.root, '--expect-sha256', sha256Hex(f1Bytes)])
    expect(v1.code === 0 && v1.json.size_bytes === f1Bytes.length, 'verified-fetch multi-block UnixFS (Kubo params)', v1.json)
    const v2 = await run('verified-fetch.mjs', ['--gateway', url, '--cid', k2.json.root, '--expect-sha256', sha256Hex(f2Bytes)])
    expect(v2.code === 0 && v2.json.size_bytes === 200000, 'verified-fetch two-level UnixFS', v2.json)
    const vp = await run('verified-fetch.mjs', ['--gateway', url, '--cid', p1.json.root, '--expect-sha256', sha256Hex(f1Bytes)])
    expect(vp.code === 0, 'verified-fetch ipfs-car DAG', vp.json)
    const vw = await run('verified-fetch.mjs', ['--gateway', url, '--cid', k1.json.root, '--expect-sha256', '0'.repeat(64)])
    expect(vw.code === 1 && vw.json.ok === false && /sha256 of the body/.test(vw.json.error), 'verified-fetch wrong digest exits 1', vw.json)
    const vu = await run('verified-fetch.mjs', ['--gateway', url])
    expect(vu.code === 2, 'verified-fetch usage error exits 2', vu.json)

    const c2 = k2.json.root
    const check = (args) => run('gateway-car-check.mjs', ['--gateway', url, '--cid', c2, ...args])
    const all = await check([])
    expect(all.code === 0 && all.json.blocks === 199 && all.json.content_sha256 === sha256Hex(f2Bytes), 'car-check dag-scope=all', all.json)
    const blk = await check(['--dag-scope', 'block'])
    expect(blk.code === 0 && blk.json.blocks === 1 && blk.json.etag !== all.json.etag, 'car-check dag-scope=block, own ETag', blk.json)
    const ent = await check(['--dag-scope', 'entity'])
    expect(ent.code === 0 && ent.json.blocks === 199, 'car-check dag-scope=entity', ent.json)
    const first = await check(['--entity-bytes', '0:0'])
    expect(first.code === 0 && first.json.blocks === 3 && first.json.content_sha256 === sha256Hex(f2Bytes.subarray(0, 1)),
      'car-check entity-bytes=0:0 is root, first inner node, first leaf', first.json)
    // Byte 174 KiB is the first byte of the second inner node's first leaf.
    const second = await check(['--entity-bytes', `${174 * KIB}:${174 * KIB}`])
    expect(second.code === 0 && second.json.blocks === 3 && second.json.cids[1] !== first.json.cids[1], 'car-check entity-bytes in the second subtree', second.json)
    const tail = await check(['--entity-bytes', '-1:*'])
    expect(tail.code === 0 && tail.json.blocks === 3 && tail.json.content_sha256 === sha256Hex(f2Bytes.subarray(199999)), 'car-check entity-bytes=-1:*', tail.json)
    const outside = await check(['--entity-bytes', '999999:*'])
    expect(outside.code === 0 && outside.json.blocks === 1, 'car-check entity-bytes outside the file = dag-scope=block', outside.json)
    const middle = await check(['--entity-bytes', '1000:-1000', '--dups', 'y'])
    expect(middle.code === 0 && middle.json.blocks === 198 && middle.json.content_sha256 === sha256Hex(f2Bytes.subarray(1000, 199001)),
      'car-check entity-bytes=1000:-1000 is bytes 1000..199000 (leaf 195 pruned)', middle.json)
    for (const via of ['accept', 'format']) {
      const r = await check(['--via', via])
      expect(r.code === 0 && r.json.blocks === 199, `car-check --via ${via}`, r.json)
    }
    const raw = await run('gateway-car-check.mjs', ['--gateway', url, '--cid', blake3Cid])
    expect(raw.code === 0 && raw.json.blocks === 1 && raw.json.content_sha256 === sha256Hex(f3Bytes), 'car-check raw BLAKE3 block', raw.json)
    const cu = await run('gateway-car-check.mjs', ['--gateway', url, '--cid', c2, '--dag-scope', 'block', '--entity-bytes', '0:1'])
    expect(cu.code === 2, 'car-check usage error exits 2', cu.json)

    // --- corrupt blocks ------------------------------------------------------------------------------------
    const k1Leaf = (await run('gateway-car-check.mjs', ['--gateway', url, '--cid', k1.json.root])).json.cids[2]
    const corrupt = await startFixture(['--car', path.join(dir, 'k1.car'), '--raw-blake3', f3, '--corrupt', k1Leaf, '--corrupt', blake3Cid])
    fixtures.push(corrupt)
    const cv3 = await run('verified-fetch.mjs', ['--gateway', corrupt.info.url, '--cid', blake3Cid, '--timeout-ms', '30000'])
    expect(cv3.code === 1 && cv3.json.ok === false && cv3.json.error.includes(blake3Cid), 'verified-fetch rejects a corrupt BLAKE3 block, naming it', cv3.json)
    const cv1 = await run('verified-fetch.mjs', ['--gateway', corrupt.info.url, '--cid', k1.json.root, '--timeout-ms', '30000'])
    expect(cv1.code === 1 && cv1.json.ok === false && cv1.json.error.includes(k1Leaf), 'verified-fetch rejects a file with a corrupt leaf, naming it', cv1.json)
    const cc = await run('gateway-car-check.mjs', ['--gateway', corrupt.info.url, '--cid', k1.json.root])
    expect(cc.code === 1 && cc.json.error.includes(k1Leaf), 'car-check names the corrupt leaf', cc.json)

    // --- missing block, wrong order ------------------------------------------------------------------------
    const missingLeaf = all.json.cids[3]
    const omit = await startFixture(['--car', path.join(dir, 'k2.car'), '--omit', missingLeaf])
    fixtures.push(omit)
    const om = await run('gateway-car-check.mjs', ['--gateway', omit.info.url, '--cid', c2])
    expect(om.code === 1 && om.json.error.includes(`missing block ${missingLeaf}`), 'car-check names the missing block', om.json)
    const reversed = await startFixture(['--car', path.join(dir, 'k2.car'), '--reverse-order'])
    fixtures.push(reversed)
    const rv = await run('gateway-car-check.mjs', ['--gateway', reversed.info.url, '--cid', c2])
    expect(rv.code === 1 && /DFS pre-order/.test(rv.json.error), 'car-check rejects a non-DFS order', rv.json)
  } finally {
    for (const f of fixtures) await stopFixture(f)
    await rm(dir, { recursive: true, force: true })
  }
  const ok = failures.length === 0
  process.stdout.write(JSON.stringify(ok ? { ok, checks } : { ok, checks, failures }) + '\n')
  process.exitCode = ok ? 0 : 1
}

main().catch((err) => {
  process.stderr.write(`selftest: ${err.stack}\n`)
  process.stdout.write(JSON.stringify({ ok: false, error: err.message }) + '\n')
  process.exitCode = 1
})
