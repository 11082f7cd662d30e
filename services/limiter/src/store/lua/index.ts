export { ACQUIRE_LUA, LEASE_LUA, SETTLE_LUA } from './decide';
export { CONFIGURE_LUA, CONDITION_LUA, SNAPSHOT_LUA } from './admin';
export { LEARN_LUA } from './learn';
export { CONFIGURE_HOLDS_LUA, HOLDS_LUA } from './holds';
