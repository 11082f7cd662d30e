/** Fixed so the listing is byte-identical across runs. */
const CREATED_SECONDS = 1_700_000_000;

export const MODEL_IDS = ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'] as const;

function modelObject(id: string): { id: string; object: 'model'; created: number; owned_by: string } {
  return { id, object: 'model', created: CREATED_SECONDS, owned_by: 'mock' };
}

export const MODELS_BODY = JSON.stringify({ object: 'list', data: MODEL_IDS.map(modelObject) });

export const MODEL_BODIES: ReadonlyMap<string, string> = new Map(MODEL_IDS.map((id) => [id, JSON.stringify(modelObject(id))]));
