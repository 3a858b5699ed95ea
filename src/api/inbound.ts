import { Type } from 'typebox';
import { acceptInbound } from '../channels/sendblue.js';
import type { Ctx } from '../core/context.js';
import { envelope } from '../server/schemas.js';
import type { Api } from './index.js';

/**
 * Where an imessage channel's Sendblue "receive" webhook points (`inboundUrl`). No API key:
 * the random token in the path names the channel (wrong token: 404), and the channel's
 * `sendBlueSigningSecret`, when set, must come in `sb-signing-secret`. Any payload with the
 * right token gets its 2xx at once; the run happens in a job.
 */
export function inboundRoutes(app: Api, ctx: Ctx): void {
  void app.register(async (scope: Api) => {
    // Every payload with the right token is answered 2xx, also one that is not JSON or has no
    // body: it is `ignored` (nothing to run), where a parse error would make Sendblue retry.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string' }, (_request, text, done) => {
      try {
        done(null, JSON.parse(text as string));
      } catch {
        done(null, undefined);
      }
    });

    scope.post(
      '/v1/inbound/sendblue/:token',
      {
        config: { public: true },
        schema: {
          tags: ['channels'],
          summary: "An imessage channel's inbound URL: Sendblue posts received messages here.",
          // No length rules on the token: any wrong token is a 404, never a 400.
          params: Type.Object({ token: Type.String() }),
          response: {
            200: envelope(
              Type.Object({
                status: Type.Union([Type.Literal('queued'), Type.Literal('duplicate'), Type.Literal('ignored')], {
                  description: 'queued: will run; duplicate: this message_handle was seen already; ignored: outbound echo, or nothing to run.',
                }),
              }),
            ),
          },
        },
      },
      async (request) => {
        const header = request.headers['sb-signing-secret'];
        const secret = Array.isArray(header) ? header[0] : header;
        return { success: true as const, data: await acceptInbound(ctx, request.params.token, secret, request.body) };
      },
    );
  });
}
