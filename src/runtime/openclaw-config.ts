/**
 * The generated `openclaw.json` of a gateway. OpenClaw validates it strictly (an unknown
 * key is a start failure, exit code 78), so every key here is one its schema documents.
 */

export const PROVIDER_ID = 'harnesslayer';
export const DEFAULT_MODEL = 'claude-sonnet-4-5';

export interface GatewayConfigInput {
  port: number;
  /** The workspace of OpenClaw's own `main` agent, which no turn uses: an empty dir. */
  mainWorkspace: string;
  /** OpenClaw's own log file (its default is a shared file under /tmp). */
  logFile: string;
  anthropicBaseUrl?: string;
  model?: string;
}

/**
 * Tools a tenant's run must not have on a shared gateway: shell and processes (they reach
 * the whole host), other sessions and agents (their transcripts), the gateway's own
 * control plane, devices, browsers and outbound messaging.
 */
export const DENIED_TOOLS = [
  'group:runtime',
  'group:sessions',
  'group:automation',
  'group:nodes',
  'group:ui',
  'group:messaging',
  'agents_list',
];

export function buildGatewayConfig(input: GatewayConfigInput): Record<string, unknown> {
  const model = input.model ?? DEFAULT_MODEL;
  return {
    gateway: {
      mode: 'local',
      port: input.port,
      bind: 'loopback',
      // The token comes from the environment so it is never written to disk.
      auth: { mode: 'token', token: '${OPENCLAW_GATEWAY_TOKEN}' },
    },
    // No LAN advertising, update checks, usage statistics or hosted model catalog: the
    // gateway talks to the model endpoint and nothing else.
    discovery: { mdns: { mode: 'off' } },
    update: { checkOnStart: false, auto: { enabled: false } },
    telemetry: { enabled: false },
    // Nothing runs unless a turn asks: no scheduled automations, no heartbeat turns.
    cron: { enabled: false },
    // An end user's message is a message: no `/...` command (`/export-session` writing into
    // the workspace, `/status`, `/new`, `/restart`), directive or shortcut runs on the shared
    // gateway. The empty allowlist is the only authority for commands once set: no one.
    commands: { native: false, nativeSkills: false, text: false, restart: false, allowFrom: { '*': [] } },
    logging: { file: input.logFile },
    agents: {
      defaults: {
        workspace: input.mainWorkspace,
        model: { primary: `${PROVIDER_ID}/${model}` },
        // The app's files are the workspace: no BOOTSTRAP.md ritual, no template files.
        skipBootstrap: true,
        heartbeat: { every: '0m' },
      },
    },
    models: {
      mode: 'replace',
      catalogRefresh: { enabled: false },
      providers: {
        [PROVIDER_ID]: {
          baseUrl: input.anthropicBaseUrl ?? 'https://api.anthropic.com',
          apiKey: '${ANTHROPIC_API_KEY}',
          api: 'anthropic-messages',
          models: [
            {
              id: model,
              name: model,
              reasoning: false,
              input: ['text', 'image'],
              cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
              contextWindow: 200_000,
              maxTokens: 8192,
            },
          ],
        },
      },
    },
    tools: {
      deny: DENIED_TOOLS,
      // read/write/edit/apply_patch stay inside the agent's workspace.
      fs: { workspaceOnly: true },
      elevated: { enabled: false },
      agentToAgent: { enabled: false },
    },
  };
}
