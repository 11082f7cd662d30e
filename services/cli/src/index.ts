export { main } from './main';
export { startMesh } from './mesh';
export type { Mesh, UpOptions, Stoppable } from './mesh';
export { SERVICE_PORTS, SERVICE_NAMES, peerAddress } from './addresses';
