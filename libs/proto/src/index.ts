// Import the generated modules by path, e.g. "@keymesh/proto/limiter/v1/limiter".
export {};
