import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';

/** The grpc-js path of a method, e.g. /keymesh.limiter.v1.LimiterService/Acquire. */
export function pathOf(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

export function serializerOf<D extends DescMessage>(schema: D): (value: MessageShape<D> | MessageInitShape<D>) => Buffer {
  return (value) => {
    const bytes = toBinary(schema, create(schema, value));
    // Wrap, don't copy: grpc-js only reads the buffer.
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

export function deserializerOf<D extends DescMessage>(schema: D): (bytes: Buffer) => MessageShape<D> {
  return (bytes) => fromBinary(schema, bytes);
}

/**
 * Turns a protobuf-es service descriptor into the grpc-js ServiceDefinition
 * that static codegen would have produced: one entry per method, keyed by its
 * local name, with the wire path, stream flags and binary (de)serializers.
 */
export function definitionOf(service: DescService): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: pathOf(method),
      requestStream: method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestSerialize: serializerOf(method.input) as (value: unknown) => Buffer,
      requestDeserialize: deserializerOf(method.input),
      responseSerialize: serializerOf(method.output) as (value: unknown) => Buffer,
      responseDeserialize: deserializerOf(method.output),
      originalName: method.name,
    };
  }
  return definition as ServiceDefinition;
}
