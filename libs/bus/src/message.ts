import { fromBinary, toBinary, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import type { BusMessage } from './bus';

/** A message that arrived as bytes (from NATS, or published as bytes). */
export class EncodedBusMessage implements BusMessage {
  constructor(
    readonly subject: string,
    readonly data: Uint8Array,
    readonly headers: Readonly<Record<string, string>>,
  ) {}

  decode<Desc extends DescMessage>(schema: Desc): MessageShape<Desc> {
    return fromBinary(schema, this.data);
  }
}

/**
 * A protobuf message handed from publisher to subscribers in one process:
 * no bytes exist unless a subscriber asks for them, and one that decodes it
 * as the schema it was published with gets the object itself.
 */
export class InProcessBusMessage<Published extends DescMessage> implements BusMessage {
  private encoded: Uint8Array | undefined;

  constructor(
    readonly subject: string,
    private readonly schema: Published,
    private readonly message: MessageShape<Published>,
    readonly headers: Readonly<Record<string, string>>,
  ) {}

  get data(): Uint8Array {
    this.encoded ??= toBinary(this.schema, this.message);
    return this.encoded;
  }

  decode<Desc extends DescMessage>(schema: Desc): MessageShape<Desc> {
    if (schema.typeName === this.schema.typeName) return this.message as unknown as MessageShape<Desc>;
    // Another schema reads the bytes as it would off the wire (and fails the same way).
    return fromBinary(schema, this.data);
  }
}
