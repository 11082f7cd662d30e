import { FakeClock } from '@keymesh/clock';
import { MemoryLimiterStore } from './memory';
import { describeLimiterStore } from './store.behaviour';

describeLimiterStore('memory', async () => new MemoryLimiterStore(), new FakeClock());
