import { FakeClock } from '@keymesh/clock';
import { describeLearning } from './learn.behaviour';
import { MemoryLimiterStore } from './memory';
import { describeLimiterStore } from './store.behaviour';

describeLimiterStore('memory', async () => new MemoryLimiterStore(), new FakeClock());
describeLearning('memory', async () => ({ store: new MemoryLimiterStore(), makeReplica: undefined }), new FakeClock());
