/**
 * The config `keymesh up` runs when given none. A string rather than a file
 * beside the code, so getting it needs no disk read.
 */
export const DEMO_CONFIG_YAML = `# keymesh demo config.
#
# Everything runs on loopback against keymesh's bundled mock provider, so no
# real provider key is needed. Copy this file and edit it: the full reference
# is libs/config/README.md. Durations are strings like 500ms, 30s, 5m, 1h, 1d
# or 1m30s. Ids may use letters, digits, ".", "_", ":" and "-".

# Where keymesh listens for OpenAI/Anthropic-compatible HTTP requests.
server:
  http:
    host: 127.0.0.1        # loopback only; use 0.0.0.0 to accept other machines
    port: 8080
    max_body_bytes: 1048576  # largest request body accepted (1 MiB)

# The mock provider \`keymesh up\` starts for this demo. It accepts exactly the
# keys listed here and enforces their limits like a real provider would
# (429s with retry-after and x-ratelimit-* headers). Delete this section when
# you point keymesh at real providers.
mock_provider:
  port: 9000
  latency: 0ms             # added to every response, e.g. 200ms to mimic a real API
  keys:
    - { secret: mock-key-1, limits: { requests: 600, per: 60s } }
    - { secret: mock-key-2, limits: { requests: 600, per: 60s } }
    - { secret: mock-key-3, limits: { requests: 600, per: 60s } }

# Upstream APIs. kind: openai covers OpenAI and any OpenAI-compatible server.
providers:
  mock:
    kind: openai
    base_url: http://127.0.0.1:9000/v1
    timeout: 60s           # per upstream attempt

# Pools of provider keys. keymesh spreads requests over a pool's keys and moves
# a request to another key when one is rate limited, out of quota or revoked.
pools:
  main:
    provider: mock
    keys:
      # A literal secret is fine for a demo. For real keys prefer
      # secret_env: OPENAI_KEY_1, which reads the key from the environment.
      # Limits are the provider's limits for that key; keymesh stays under them
      # so callers never see the provider's 429. rpm: 600 means at most 600
      # requests in any 60s window; { requests: N, per: 10s } works too.
      - { id: k1, secret: mock-key-1, limits: { rpm: 600 } }
      - { id: k2, secret: mock-key-2, limits: { rpm: 600 } }
      - { id: k3, secret: mock-key-3, limits: { rpm: 600 } }

# Model names callers ask for, each mapped to targets tried in order
# (later targets are fallbacks).
routes:
  gpt-4o-mini:
    targets:
      - { pool: main, model: gpt-4o-mini }
  # The same model with identical requests answered from the cache for 5m.
  gpt-4o-mini-cached:
    targets:
      - { pool: main, model: gpt-4o-mini }
    cache: { ttl: 5m }
  text-embedding-3-small:
    targets:
      - { pool: main, model: text-embedding-3-small }
    timeout: 30s           # whole request, across retries and fallbacks

# Who may call keymesh. Callers send a virtual key as their API key
# (Authorization: Bearer sk-keymesh-demo); provider keys never leave keymesh.
tenants:
  demo:
    virtual_keys: [ sk-keymesh-demo ]
`;
