import { context, ROOT_CONTEXT, type Context } from '@opentelemetry/api';

/**
 * A context holding one value on top of its parent. The API's own context
 * copies its whole Map and makes three closures on every setValue; the HTTP
 * edge sets two per request (its span, then the route span), and those
 * copies were about 4% of the heap a request allocates. A lookup walks the
 * chain, which stays a few links long: a trace parent and a span or two.
 */
class ChainedContext implements Context {
  constructor(
    private readonly parent: Context,
    private readonly key: symbol,
    private readonly value: unknown,
  ) {}

  getValue(key: symbol): unknown {
    return key === this.key ? this.value : this.parent.getValue(key);
  }

  setValue(key: symbol, value: unknown): Context {
    return new ChainedContext(this, key, value);
  }

  deleteValue(key: symbol): Context {
    // A deleted key reads as undefined, as it does in the API's context.
    return this.getValue(key) === undefined ? this : new ChainedContext(this, key, undefined);
  }
}

/** The root context's values (none), with ChainedContext's setValue. */
const CHAINED_ROOT: Context = new ChainedContext(ROOT_CONTEXT, Symbol('keymesh.chained-root'), undefined);

/**
 * The context to derive a request's contexts from: the active one, or, when
 * none is (services pass contexts explicitly), a root whose children do not
 * copy a Map each.
 */
export function baseContext(): Context {
  const active = context.active();
  return active === ROOT_CONTEXT ? CHAINED_ROOT : active;
}
