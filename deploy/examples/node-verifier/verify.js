// Verifier of Tollgate identity headers v2 in plain Node (no dependencies),
// following docs/identity-headers.md. verify() takes Node's req.headers
// (lower-case names), the method, the path+query as received (req.url), the
// raw body (Buffer), a Map of key id -> secret (Buffer, at least 32 bytes:
// parseKeys(process.env.TOLLGATE_IDENTITY_KEYS) makes it), the clock (ms;
// undefined: Date.now()), the window (ms; undefined: 30000; either one not
// a whole number of ms throws a TypeError, as a NaN clock would pass a
// request of any age) and the process's Replays, which refuses a signed request
// sent again ('replay'): const replays = new Replays(); once, then
// const body = await readBody(req) (at most MAX_BODY_BYTES, 1 MiB, as the
// Go SDK's MaxBodyBytes; a longer one rejects with code 'body_too_large':
// answer 413) and verify(req.headers, req.method, req.url,
// body, keys, Date.now(), 30000, replays, req.trailers): a request whose
// trailer section names a signed header, announced (Trailer) or sent, is
// 'malformed'.
// The replay filter is not optional by omission: replays left out (or
// anything but an object with Replays' firstUse) throws a TypeError; false
// accepts replays, for an app that deduplicates requests itself (as the Go
// SDK's verify.Config.AllowReplays).
// It returns the caller as the Go SDK's verify.Identity holds it
// ({principal, userId, tenantId, sessionId, roles, permissions,
// emailVerified, amr, authTime, clientIp, requestId, keyId}, lists as
// arrays, plus canonical, a Buffer of the bytes the signature covers, which
// the test vectors compare: pick the fields an app passes on rather than
// sending the whole object) or throws an Error whose code names the reason.
// Node hands out header values as latin1 strings, one character per byte
// received: the canonical string is hashed as those bytes (latin1), never
// as a UTF-8 encoding of the characters, which would turn each byte above
// 0x7F into two.
// Run as a program it checks every test vector, in order, through one
// Replays, and each valid one sent again: node verify.js vectors.json
'use strict';
const crypto = require('node:crypto');

const PRINCIPALS = ['user', 'api_key', 'service', 'anonymous'];
// The headers the signature covers, and the signature.
const SIGNED = new Set(['x-auth-key-id', 'x-auth-principal', 'x-auth-user-id', 'x-auth-tenant-id', 'x-auth-session-id',
  'x-auth-roles', 'x-auth-permissions', 'x-auth-email-verified', 'x-auth-amr', 'x-auth-auth-time', 'x-auth-client-ip',
  'x-request-id', 'x-auth-timestamp', 'x-auth-signature']);
// aliased: a name that is a signed header's with '_' for '-' (x_auth_roles)
// or its CGI name (http_x_auth_roles). Node keeps it apart, but CGI-style
// readers (PHP, WSGI) file it under the signed header's name; the proxy
// never sends one.
const aliased = (name) => name.includes('_') && SIGNED.has(name.toLowerCase().replace(/_/g, '-').replace(/^http-(?=x-)/, ''));
const MIN_KEY_BYTES = 32;
const fail = (code) => { throw Object.assign(new Error(code), { code }); };
// Go's white space (unicode.IsSpace), which it trims around a secret; not
// String.prototype.trim's, which also takes a byte order mark.
const GO_SPACE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;

// parseKeys reads a key list as TOLLGATE_IDENTITY_KEYS holds it ("id:base64"
// entries separated by commas, spaces or newlines; standard or URL base64,
// padded or not; white space around a secret ignored, as Go trims it) into
// the Map verify() takes, as the Go SDK reads it, and throws on anything
// else: an id that is not 1-64 of [A-Za-z0-9._-], an id listed twice, a
// secret that is not base64 or is shorter than 32 bytes.
// (Buffer.from(text, 'base64') skips what it cannot read: a mistyped or
// missing secret became a short key, or an empty one, with which anybody
// signs.)
function parseKeys(text) {
  const entries = String(text ?? '').split(/[, \t\r\n]+/).filter((e) => e !== '');
  if (entries.length === 0) throw new Error('identity keys: empty');
  const keys = new Map();
  entries.forEach((e, i) => {
    const at = e.indexOf(':'), id = e.slice(0, Math.max(at, 0)), b64 = e.slice(at + 1).replace(GO_SPACE, '');
    const bare = b64.replace(/={1,2}$/, '');
    // By its position only: an entry written backwards ("secret:id") has
    // its URL-safe secret where the id goes, which the message printed.
    const bad = (why) => { throw new Error(`identity keys: entry ${i + 1}: ${why}`); };
    if (at < 0) bad('want id:base64');
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) bad('key id must be 1-64 of [A-Za-z0-9._-]');
    if (keys.has(id)) bad('key id listed twice');
    if (!/^([A-Za-z0-9+/]*|[A-Za-z0-9_-]*)$/.test(bare) || bare.length % 4 === 1 || (bare !== b64 && b64.length % 4 !== 0)) {
      bad('not valid base64');
    }
    const secret = Buffer.from(bare, 'base64');
    if (secret.length < MIN_KEY_BYTES) bad(`${secret.length} bytes, want at least ${MIN_KEY_BYTES}`);
    keys.set(id, secret);
  });
  return keys;
}

// Replays remembers the signatures verify() accepted until their timestamp
// leaves the window. It is bounded: at most max entries (about 200 bytes
// each); when full, the oldest (the first to come, which expires about
// first) is forgotten early, counted in evicted, and a replay of it is then
// accepted. Give it max >= rate x window (3,333 requests a second at the
// default and 30 s): past that, once full, every signature is forgotten
// before its window ends, after max / rate seconds (25 s at 4,000 a
// second). It is the process's own:
// another process accepts a replay once more.
class Replays {
  constructor(max = 100000) {
    // NaN (an unset variable, say) compares false: the memory would never
    // be bounded.
    if (!Number.isSafeInteger(max) || max < 1) throw new TypeError('Replays: max must be a whole number, at least 1');
    this.max = max; this.seen = new Map(); this.evicted = 0; this.swept = -Infinity;
  }
  // firstUse records sig until expMs and says whether it was new.
  firstUse(sig, expMs, nowMs) {
    if (this.seen.get(sig) >= nowMs) return false;
    this.seen.delete(sig);
    for (const [s, exp] of this.seen) { // expired ones, from the oldest
      if (exp >= nowMs) break;
      this.seen.delete(s);
    }
    if (this.seen.size >= this.max && nowMs - this.swept >= 1000) {
      // Held in the order they came, from proxies whose clocks differ:
      // expired entries can sit behind a live one. Full, look at every
      // entry (at most once a second) before forgetting a live one early.
      this.swept = nowMs;
      for (const [s, exp] of this.seen) if (exp < nowMs) this.seen.delete(s);
    }
    if (this.seen.size >= this.max) {
      this.seen.delete(this.seen.keys().next().value);
      this.evicted++;
    }
    this.seen.set(sig, expMs);
    return true;
  }
}

// MAX_BODY_BYTES is readBody's default bound, the Go SDK's
// verify.DefaultMaxBodyBytes (and the proxy's MAX_BODY_BYTES): 1 MiB.
const MAX_BODY_BYTES = 1 << 20;

// readBody reads req's body, the bytes verify() hashes, at most maxBytes
// of them (a whole number, or Infinity for no bound of its own): a body
// declared (Content-Length) or found longer rejects with an Error whose
// code is 'body_too_large', which an app answers 413, as the Go SDK does
// (before verifying anything: whoever reaches the port chooses the body).
// It resolves once the body ended, so that req.trailers is complete.
function readBody(req, maxBytes = MAX_BODY_BYTES) {
  if (!(Number.isSafeInteger(maxBytes) && maxBytes >= 0) && maxBytes !== Infinity) {
    throw new TypeError('readBody: maxBytes must be a whole number of bytes, or Infinity');
  }
  return new Promise((resolve, reject) => {
    const tooLarge = () => Object.assign(new Error('body_too_large'), { code: 'body_too_large' });
    const chunks = [];
    let n = 0, over = Number(req.headers['content-length']) > maxBytes;
    if (over) reject(tooLarge());
    req.on('data', (c) => { // read on and dropped: the connection stays usable for the answer
      if (over) return;
      n += c.length;
      if (n > maxBytes) {
        over = true; chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => { if (!over) resolve(Buffer.concat(chunks, n)); });
    req.on('error', reject);
  });
}

// signedName: a signed header's name in any letter case, or aliased.
const signedName = (name) => SIGNED.has(String(name).toLowerCase()) || aliased(String(name));

function verify(h, method, pathQuery, body, keys, nowMs = Date.now(), windowMs = 30000, replays = undefined, trailers = undefined) {
  // NaN compares false: a clock or window that is no whole number of
  // milliseconds would pass a signature of any age, and a replay.
  if (!Number.isSafeInteger(nowMs) || !Number.isSafeInteger(windowMs) || windowMs < 0) {
    throw new TypeError('verify: nowMs and windowMs must be whole milliseconds');
  }
  // Left out, the filter was off: every captured request verified again
  // within its window, where the Go SDK refuses it unless told not to.
  if (replays !== false && typeof replays?.firstUse !== 'function') {
    throw new TypeError('verify: replays must be the process\'s Replays, or false to accept replays');
  }
  const get = (name) => h[name] || '';
  const sig = get('x-auth-signature'), ts = get('x-auth-timestamp');
  if (!sig || !ts) fail('missing');
  if (Object.keys(h).some(aliased)) fail('malformed');
  // A chunked body's trailer section holds header fields too, which Node
  // hands out apart (req.trailers, once the body is read): one named as a
  // signed header, announced in the Trailer header or sent, would be read
  // there for the signed one. The proxy sends none.
  if (String(h.trailer ?? '').split(',').some((n) => signedName(n.trim()))) fail('malformed');
  if (trailers != null && Object.keys(trailers).some(signedName)) fail('malformed');
  if (!sig.startsWith('v2=')) fail(sig.startsWith('v1=') ? 'version' : 'malformed');
  const mac = sig.slice(3);
  if (!/^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/.test(mac) || !/^[1-9][0-9]{0,15}$/.test(ts)) fail('malformed');
  const keyId = get('x-auth-key-id');
  if (!keys.has(keyId)) fail('unknown_key');
  // A secret shorter than a key's 32 bytes (an unset variable decoded to an
  // empty Buffer, say) is no key: anybody could sign with it.
  const secret = keys.get(keyId);
  if (!(secret instanceof Uint8Array) || secret.length < MIN_KEY_BYTES) fail('bad_key');
  const ev = get('x-auth-email-verified'), at = get('x-auth-auth-time');
  // An auth time above 2^53-1 is no number JavaScript holds exactly:
  // Number() would return another one than was signed.
  if (!['true', 'false'].includes(ev) || !/^([1-9][0-9]{0,15})?$/.test(at) || !Number.isSafeInteger(Number(at))) {
    fail('malformed');
  }
  if (!PRINCIPALS.includes(get('x-auth-principal'))) fail('malformed');
  const lists = ['x-auth-roles', 'x-auth-permissions', 'x-auth-amr'].map(get);
  if (lists.some((l) => l !== '' && l.split(',').includes(''))) fail('malformed');
  // The request id makes two identical requests' signatures differ: one
  // without it cannot be told from a replay of another.
  if (!get('x-request-id')) fail('malformed');
  const fields = [
    'v2', keyId, get('x-auth-principal'), get('x-auth-user-id'), get('x-auth-tenant-id'), get('x-auth-session-id'),
    ...lists.slice(0, 2), ev, lists[2], at,
    ts, get('x-request-id'), get('x-auth-client-ip'), method, pathQuery,
    crypto.createHash('sha256').update(body).digest('hex'),
  ];
  // A character above 0xFF is no byte of a request: not one Node gives.
  if (fields.some((f) => /[\r\n]|[^\x00-\xff]/.test(f))) fail('malformed');
  if (Math.abs(nowMs - Number(ts)) > windowMs) fail('expired');
  const canonical = Buffer.from(fields.join('\n'), 'latin1'); // the bytes received
  const want = crypto.createHmac('sha256', secret).update(canonical).digest();
  if (!crypto.timingSafeEqual(want, Buffer.from(mac, 'base64url'))) fail('signature');
  // Only a signature that verified is remembered: a forgery neither fills
  // the memory nor makes the genuine request a replay.
  if (replays !== false && !replays.firstUse(sig, Number(ts) + windowMs, nowMs)) fail('replay');
  // The verified identity, read as the Go SDK reads it (verify.Identity):
  // lists split at each comma (never ', '), the empty string the empty
  // list; authTime in unix seconds, 0 when unknown. Authorize with
  // permissions.includes(name), never a substring test of the header.
  const list = (l) => (l === '' ? [] : l.split(','));
  return {
    principal: fields[2], userId: fields[3], tenantId: fields[4], sessionId: fields[5],
    roles: list(lists[0]), permissions: list(lists[1]), emailVerified: ev === 'true', amr: list(lists[2]),
    authTime: at === '' ? 0 : Number(at), clientIp: fields[13], requestId: fields[12], keyId, canonical,
  };
}

if (require.main === module) {
  let failed = 0;
  const check = (name, want, run) => {
    let got = 'valid';
    try { run(); } catch (e) { got = e.code || String(e); }
    console.log(`${got === want ? 'ok  ' : 'FAIL'} ${name}: ${got}${got === want ? '' : `, want ${want}`}`);
    if (got !== want) failed++;
  };
  const replays = new Replays(); // one server: the vectors in order
  // The vectors' text as Node's http module hands it out: the UTF-8 bytes
  // sent, one latin1 character per byte.
  const received = (x) => Buffer.from(x, 'utf8').toString('latin1');
  for (const v of JSON.parse(require('node:fs').readFileSync(process.argv[2], 'utf8'))) {
    const keys = parseKeys(`${v.key_id}:${v.key_secret_base64}`);
    const h = Object.fromEntries(Object.entries(v.headers).map(([k, x]) => [k.toLowerCase(), received(x)]));
    h['x-auth-signature'] = received(v.signature);
    const body = Buffer.from(v.body, 'utf8');
    const run = (b) => verify(h, v.method, received(v.path_query), b, keys, v.now_ms, 30000, replays);
    check(v.name, v.valid ? 'valid' : v.error, () => {
      if (!run(body).canonical.equals(Buffer.from(v.canonical, 'utf8'))) fail('canonical differs');
    });
    if (v.valid) {
      check(`${v.name}, body changed`, 'signature', () => run(Buffer.concat([body, Buffer.from(' ')])));
      check(`${v.name}, sent again`, 'replay', () => run(body));
    }
  }
  console.log(failed ? `${failed} failed` : 'all vectors pass');
  process.exit(failed ? 1 : 0);
}
module.exports = { verify, Replays, parseKeys, readBody, MAX_BODY_BYTES };
