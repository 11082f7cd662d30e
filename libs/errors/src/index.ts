export { Code, KeymeshError, Reason } from './keymesh-error';
export type { KeymeshErrorInit, ReasonName } from './keymesh-error';
export { toStatusDetails, fromStatusDetails } from './status-details';
export { toHttpError, openAiErrorBody, anthropicErrorBody } from './http';
export type { HttpError, OpenAiErrorBody, AnthropicErrorBody } from './http';
