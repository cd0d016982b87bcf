-- A small application schema for `make demo`: the seed example of the DSL, as plain SQL.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
DO $$ BEGIN
  CREATE ROLE app_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE ROLE app_writer; EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TYPE public.todo_state AS ENUM ('open', 'doing', 'done');

CREATE TABLE public.users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL UNIQUE
);
COMMENT ON TABLE public.users IS 'People who own todos';

CREATE TABLE public.todos (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL,
  owner_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
  title text,
  state public.todo_state NOT NULL DEFAULT 'open',
  done boolean DEFAULT false
);
CREATE INDEX ix_todos_owner ON public.todos (owner_id);
CREATE INDEX ix_todos_open ON public.todos (tenant_id) WHERE NOT done;

ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON public.todos
  USING (tenant_id = current_setting('app.tenant_id', true)::uuid);

GRANT SELECT ON public.users TO app_reader;
GRANT INSERT, UPDATE ON public.users TO app_writer;

CREATE VIEW public.open_todos AS SELECT id, title FROM public.todos WHERE NOT done;
