// Drive an overlay node with @bsv/sdk's AuthFetch, unmodified.
// usage: node authfetch.js BASE_URL PRIVATE_KEY_HEX
// Prints one JSON line with what each step returned; exits 1 on any error.
const { AuthFetch, ProtoWallet, PrivateKey } = require('@bsv/sdk')

async function main () {
  const [base, keyHex] = process.argv.slice(2)
  const crypto = require('crypto')
  const key = PrivateKey.fromHex(keyHex)
  const identityKey = key.toPublicKey().toString()
  const client = new AuthFetch(new ProtoWallet(key))
  const json = { 'content-type': 'application/json' }
  const out = { identityKey }

  let r = await client.fetch(`${base}/v1/node`)
  out.node = { status: r.status, body: await r.json() }

  r = await client.fetch(`${base}/v1/streaming/quotas/policies`, {
    method: 'POST', headers: json, body: JSON.stringify({ policyName: 'js-agents', bytesPerHour: 1000000 })
  })
  out.policy = { status: r.status, body: await r.json() }

  r = await client.fetch(`${base}/v1/streaming/receipts`, {
    method: 'POST', headers: json, body: JSON.stringify({ policyName: 'js-agents', identityKey })
  })
  out.receipt = { status: r.status, body: await r.json() }

  // AuthFetch 2.1.0 JSON-encodes every object body, typed arrays included,
  // so what it can upload is text.
  const content = crypto.randomBytes(35000).toString('hex')
  r = await client.fetch(`${base}/v1/content`, {
    method: 'POST', headers: { 'content-type': 'text/plain' }, body: content
  })
  out.added = { status: r.status, body: await r.json() }
  out.sha256 = crypto.createHash('sha256').update(content).digest('hex')

  // No receiptId: the node charges the authenticated identity's receipt.
  r = await client.fetch(`${base}/v1/streaming/data/${out.added.body.contentHash}`)
  const bytes = Buffer.from(await r.arrayBuffer())
  out.data = { status: r.status, length: bytes.length, sha256: crypto.createHash('sha256').update(bytes).digest('hex') }

  r = await client.fetch(`${base}/v1/streaming/quotas/${out.receipt.body.receiptId}`)
  out.quota = { status: r.status, body: await r.json() }

  // An agent session (the README's example): open it, read through it, see its progress.
  r = await client.fetch(`${base}/v1/streaming/sessions`, {
    method: 'POST', headers: json, body: JSON.stringify({ contentHash: out.added.body.contentHash, agentId: 'js-agent' })
  })
  const session = await r.json()
  out.session = { status: r.status, body: session }
  // AuthFetch sends no Range header; the range query parameter does its job.
  r = await client.fetch(`${base}${session.dataUrl}&range=0-9999`)
  out.sessionRead = { status: r.status, length: Buffer.from(await r.arrayBuffer()).length }
  r = await client.fetch(`${base}/v1/streaming/sessions/${session.sessionId}`)
  out.progress = (await r.json()).progress
  console.log(JSON.stringify(out))
}

main().catch(err => { console.error(err && err.stack ? err.stack : String(err)); process.exit(1) })
