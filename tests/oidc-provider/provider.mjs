// The OIDC system tests' real OpenID provider and their token forger, on loopback only.
//
//   node provider.mjs keys <out.json> <kid-prefix> <alg>...   private JWKS, one key per alg
//   node provider.mjs serve <config.json>                      the provider (panva/oidc-provider)
//   node provider.mjs sign <keys.json> <header.json> <payload.json> [hmac-secret-file]
//   node provider.mjs public <keys.json> <out.json> [pem-of-kid]  public JWKS (and one key's PEM)
//
// serve: HTTPS on 127.0.0.1:<port> with the given certificate; client-credentials grant,
// JWT access tokens signed with the algorithm each client names, the client's dg_claims
// added to its tokens; with ui_clients, the authorization-code flow (PKCE) with the
// provider's development login page (any password) for the accounts given. GET /test/jwks-requests answers how many JWKS fetches it served.
// It prints "ready <issuer>" once listening and stops on SIGTERM.
//
// sign: a compact JWS with exactly the given header (no library rewrites it), signed with
// the key whose kid the header names (RS256, ES256, EdDSA), or HS256 with the secret file.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';

const [, , command, ...args] = process.argv;

const b64url = (buffer) => Buffer.from(buffer).toString('base64url');

async function makeKeys(out, prefix, algs) {
  const { generateKeyPair, exportJWK } = await import('jose');
  const keys = [];
  for (const alg of algs) {
    const options = alg === 'EdDSA' ? { crv: 'Ed25519', extractable: true } : { extractable: true };
    const { privateKey } = await generateKeyPair(alg, options);
    const jwk = await exportJWK(privateKey);
    keys.push({ ...jwk, kid: `${prefix}-${alg.toLowerCase()}`, alg, use: 'sig' });
  }
  fs.writeFileSync(out, JSON.stringify({ keys }, null, 2), { mode: 0o600 });
}

function sign(keysFile, headerFile, payloadFile, secretFile) {
  const header = JSON.parse(fs.readFileSync(headerFile, 'utf8'));
  const payload = fs.readFileSync(payloadFile, 'utf8');
  const input = `${b64url(JSON.stringify(header))}.${b64url(payload)}`;
  if (header.alg === 'none') {
    return `${input}.`;
  }
  if (header.alg === 'HS256') {
    const secret = fs.readFileSync(secretFile);
    return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`;
  }
  const { keys } = JSON.parse(fs.readFileSync(keysFile, 'utf8'));
  const jwk = keys.find((k) => k.kid === header.signing_kid) || keys.find((k) => k.kid === header.kid);
  if (!jwk) throw new Error(`no key ${header.signing_kid || header.kid}`);
  const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  let signature;
  if (jwk.alg === 'RS256') signature = crypto.sign('sha256', Buffer.from(input), key);
  else if (jwk.alg === 'ES256') signature = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  else if (jwk.alg === 'EdDSA') signature = crypto.sign(null, Buffer.from(input), key);
  else throw new Error(`cannot sign ${jwk.alg}`);
  return `${input}.${b64url(signature)}`;
}

async function serve(configFile) {
  const { default: Provider } = await import('oidc-provider');
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  const { keys } = JSON.parse(fs.readFileSync(config.keys_file, 'utf8'));
  const issuer = `https://127.0.0.1:${config.port}`;
  const clients = config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
    dg_alg: c.alg,
    dg_claims: c.claims,
  }));
  // Browser sign-in clients (the admin UI): public, authorization code with PKCE, ID
  // tokens signed with the client's algorithm.
  for (const c of config.ui_clients || []) {
    clients.push({
      client_id: c.client_id,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [c.redirect_uri],
      token_endpoint_auth_method: 'none',
      id_token_signed_response_alg: c.alg,
      dg_alg: c.alg,
    });
  }
  // Accounts for the login page (any password): their claims go into ID tokens asked
  // for with the `dg_roles` scope.
  const accounts = config.accounts || {};
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys },
    extraClientMetadata: { properties: ['dg_alg', 'dg_claims'] },
    findAccount: async (_ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, ...(accounts[id] || {}) }),
    }),
    claims: { openid: ['sub'], dg_roles: ['dg_role', 'dg_tenant', 'dg_namespaces'] },
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: (config.ui_clients || []).length > 0 },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, _resource, client) => ({
          scope: 'dg',
          audience: config.audience,
          accessTokenTTL: config.token_ttl_s || 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: client.dg_alg } },
        }),
      },
    },
    scopes: ['dg', 'dg_roles'],
    extraTokenClaims: async (ctx, token) => {
      const client = await ctx.oidc.provider.Client.find(token.clientId);
      return client ? client.dg_claims : undefined;
    },
  });
  let jwksRequests = 0;
  const handle = provider.callback();
  const server = https.createServer(
    { cert: fs.readFileSync(config.cert), key: fs.readFileSync(config.key) },
    (req, res) => {
      if (req.url === '/test/jwks-requests') {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ count: jwksRequests }));
        return;
      }
      if (req.url.startsWith('/jwks')) jwksRequests += 1;
      handle(req, res);
    },
  );
  server.listen(config.port, '127.0.0.1', () => console.log(`ready ${issuer}`));
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

function publicKeys(keysFile, out, pemKid) {
  const { keys } = JSON.parse(fs.readFileSync(keysFile, 'utf8'));
  const strip = ({ d, p, q, dp, dq, qi, ...rest }) => rest;
  fs.writeFileSync(out, JSON.stringify({ keys: keys.map(strip) }, null, 2));
  if (pemKid) {
    const jwk = keys.find((k) => k.kid === pemKid);
    process.stdout.write(crypto.createPublicKey({ key: strip(jwk), format: 'jwk' }).export({ type: 'spki', format: 'pem' }));
  }
}

if (command === 'public') {
  publicKeys(args[0], args[1], args[2]);
} else if (command === 'keys') {
  await makeKeys(args[0], args[1], args.slice(2));
} else if (command === 'sign') {
  process.stdout.write(sign(args[0], args[1], args[2], args[3]));
} else if (command === 'serve') {
  await serve(args[0]);
} else {
  console.error('usage: provider.mjs keys|serve|sign ...');
  process.exit(2);
}
