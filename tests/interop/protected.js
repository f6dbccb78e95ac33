// Open protected content with nothing but @bsv/sdk: the key message (BRC-78,
// EncryptedMessage.decrypt) and sealed chunks (SymmetricKey.decrypt), each
// checked to be the chunk asked for (its IV, an HMAC of the key and the index).
// usage: node protected.js < input.json
// input: { keyMessage: base64, recipientKey: hex, chunks: [{ index, sealed: hex }] }
// Prints one JSON line: { key: {...the content key, key as hex}, chunks: [hex plaintext] }; exits 1 on any error.
const { EncryptedMessage, PrivateKey, SymmetricKey, Hash, Utils } = require('@bsv/sdk')

function chunkIv (key, index) {
  const label = Utils.toArray('overlay-node/protected/1 chunk ', 'utf8')
  const be = []
  let n = BigInt(index)
  for (let i = 0; i < 8; i++) { be.unshift(Number(n & 0xffn)); n >>= 8n }
  return Hash.sha256hmac(key, label.concat(be))
}

async function main () {
  const input = JSON.parse(require('fs').readFileSync(0, 'utf8'))
  const recipient = PrivateKey.fromHex(input.recipientKey)
  const opened = EncryptedMessage.decrypt(Utils.toArray(input.keyMessage, 'base64'), recipient)
  const contentKey = JSON.parse(Utils.toUTF8(opened))
  const key = Utils.toArray(contentKey.key, 'base64')
  const symmetric = new SymmetricKey(key)
  const chunks = input.chunks.map(({ index, sealed }) => {
    const bytes = Utils.toArray(sealed, 'hex')
    if (Utils.toHex(bytes.slice(0, 32)) !== Utils.toHex(chunkIv(key, index))) {
      throw new Error(`chunk ${index}: its IV is not chunk ${index}'s`)
    }
    return Utils.toHex(symmetric.decrypt(bytes))
  })
  console.log(JSON.stringify({ key: { ...contentKey, key: Utils.toHex(key) }, chunks }))
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1) })
