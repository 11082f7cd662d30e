export type { Bus, BusMessage, Subscription, SubscribeOptions } from './bus';
export { Subjects } from './bus';
export { createMemoryBus } from './memory';
export { connectNatsBus } from './nats';
export type { NatsBusOptions } from './nats';
