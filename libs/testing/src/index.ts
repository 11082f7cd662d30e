export { freePort } from './ports';
export { waitFor } from './wait';
export type { WaitForOptions } from './wait';
export { redisForTests, natsForTests, startPrivateRedis, startPrivateNats } from './servers';
export type { ExternalServer, PrivateServer } from './servers';
export { startOtlpReceiver, OtlpSpanKind } from './otlp';
export type { OtlpReceiver, ReceivedSpan, AttributeValue } from './otlp';
export { spawnNode } from './child';
export type { ChildHandle, SpawnNodeOptions } from './child';
