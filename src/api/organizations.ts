import { Type } from 'typebox';
import type { Ctx } from '../core/context.js';
import { createOrganization, organizationView, updateOrganization } from '../core/organizations.js';
import { userOf } from '../server/app.js';
import { Name, Slug, body, envelope } from '../server/schemas.js';
import type { Api } from './index.js';

const Organization = Type.Object({
  id: Type.String(),
  slug: Type.String(),
  name: Type.String(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

export function organizationRoutes(app: Api, ctx: Ctx): void {
  app.post(
    '/v1/organization/create',
    {
      schema: {
        tags: ['organizations'],
        summary: 'Create a Harnesslayer organization.',
        body: body({ name: Name, slug: Slug, returnIfExist: Type.Optional(Type.Boolean()) }),
        response: { 200: envelope(Type.Object({ ...Organization.properties, apiKey: Type.Optional(Type.String()) })) },
      },
    },
    async (request) => {
      const { organization, apiKey } = await createOrganization(ctx, userOf(request), request.body);
      return { success: true as const, data: { ...organizationView(organization), ...(apiKey ? { apiKey } : {}) } };
    },
  );

  app.patch(
    '/v1/organization/:organization_id',
    {
      schema: {
        tags: ['organizations'],
        summary: 'Update an organization name or slug.',
        params: Type.Object({ organization_id: Type.String({ minLength: 1, maxLength: 128 }) }),
        body: body({ name: Type.Optional(Name), slug: Type.Optional(Slug) }),
        response: { 200: envelope(Organization) },
      },
    },
    async (request) => {
      const org = await updateOrganization(ctx, userOf(request), request.params.organization_id, request.body);
      return { success: true as const, data: organizationView(org) };
    },
  );
}
