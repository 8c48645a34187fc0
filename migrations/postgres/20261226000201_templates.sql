-- Templates stored by `create_template`, per tenant (those of the configuration are not stored).
-- `fields` is the template's JSON without environment values, which `environment_vars` holds
-- (as on sandbox rows: the job's arguments keep only the names).
CREATE TABLE templates (
    tenant           TEXT        NOT NULL,
    name             TEXT        NOT NULL,
    fields           JSONB       NOT NULL,
    environment_vars JSONB       NOT NULL DEFAULT '{}',
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, name)
);
