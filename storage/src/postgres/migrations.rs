//! Forward-only schema versions of the PostgreSQL backend. The pending steps run together in
//! one transaction that first takes a transaction-scoped advisory lock, so nodes starting at
//! once migrate one after the other: the first applies the steps, the others find the schema
//! current, and no node ever sees a schema half-way. A schema
//! newer than this build is refused, as on SQLite.

use deadpool_postgres::Object;

use crate::error::StoreError;
use crate::postgres::connection::pg;
use crate::store::audit::GENESIS_SHA256;

/// Highest PostgreSQL schema version this build knows.
pub const PG_SCHEMA_VERSION: i64 = 4;

/// The advisory lock every migration holds ("dg-migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x0064_672d_6d69_6772;

/// Each step's SQL; index `i` moves version `i` to `i + 1`. The tables are those of the SQLite
/// schema (`store/migrations.rs`) with PostgreSQL's types; documents are `bytea` holding the
/// canonical JSON exactly, beside their sha256. Text compares byte by byte (`COLLATE "C"`), as
/// in SQLite, whatever the database's locale: orderings and page cursors are the same.
const MIGRATIONS: [&str; 4] = [
    // v1: the whole first schema.
    r#"
    CREATE TABLE dg_meta (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version bigint NOT NULL, instance_id text COLLATE "C" NOT NULL,
        registry_generation bigint NOT NULL DEFAULT 0,
        last_backup_at_ms bigint, forward_cursor_seq bigint
    );
    CREATE TABLE runs (
        tenant_id bigint NOT NULL, namespace_id bigint NOT NULL, run_id text COLLATE "C" NOT NULL,
        scenario_id text COLLATE "C" NOT NULL, status text COLLATE "C" NOT NULL, version bigint NOT NULL,
        state_json bytea NOT NULL, state_sha256 text COLLATE "C" NOT NULL, saved_at_ms bigint NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, run_id)
    );
    CREATE TABLE scenarios (
        tenant_id bigint NOT NULL, namespace_id bigint NOT NULL, scenario_id text COLLATE "C" NOT NULL,
        spec_json bytea NOT NULL, spec_sha256 text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, scenario_id)
    );
    CREATE TABLE data_shapes (
        tenant_id bigint NOT NULL, namespace_id bigint NOT NULL, schema_id text COLLATE "C" NOT NULL,
        version text COLLATE "C" NOT NULL, record_json bytea NOT NULL, record_sha256 text COLLATE "C" NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id, schema_id, version)
    );
    CREATE TABLE api_keys (
        key_id text COLLATE "C" PRIMARY KEY, record_json bytea NOT NULL, record_sha256 text COLLATE "C" NOT NULL,
        secret_sha256 text COLLATE "C" NOT NULL UNIQUE
    );
    CREATE TABLE tenant_usage (
        tenant_id bigint PRIMARY KEY, run_bytes bigint NOT NULL,
        runs_active bigint NOT NULL DEFAULT 0, runs_completed bigint NOT NULL DEFAULT 0,
        runs_failed bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE tenants (
        tenant_id bigint PRIMARY KEY, name text COLLATE "C" NOT NULL UNIQUE, status text COLLATE "C" NOT NULL,
        quotas_json text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL
    );
    CREATE TABLE namespaces (
        tenant_id bigint NOT NULL REFERENCES tenants (tenant_id), namespace_id bigint NOT NULL,
        name text COLLATE "C" NOT NULL, status text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL,
        PRIMARY KEY (tenant_id, namespace_id)
    );
    CREATE TABLE audit_head (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        seq bigint NOT NULL, sha256 text COLLATE "C" NOT NULL, time_ms bigint NOT NULL
    );
    CREATE TABLE audit_log (
        seq bigint PRIMARY KEY, entry_json bytea, entry_sha256 text COLLATE "C" NOT NULL,
        tenant_id bigint, time_ms bigint NOT NULL
    );
    CREATE TABLE audit_checkpoints (entry_count bigint PRIMARY KEY, checkpoint_json bytea NOT NULL);
    CREATE TABLE audit_holds (tenant_id bigint PRIMARY KEY, reason text COLLATE "C" NOT NULL, created_at_ms bigint NOT NULL);
    CREATE TABLE usage_ledger (
        tenant_id bigint NOT NULL, request_id text COLLATE "C" NOT NULL, counter text COLLATE "C" NOT NULL, key_id text COLLATE "C" NOT NULL,
        amount bigint NOT NULL, at_ms bigint NOT NULL, PRIMARY KEY (tenant_id, request_id, counter)
    );
    CREATE TABLE usage_totals (
        tenant_id bigint NOT NULL, counter text COLLATE "C" NOT NULL, total bigint NOT NULL, PRIMARY KEY (tenant_id, counter)
    );
    CREATE TABLE usage_periods (
        tenant_id bigint NOT NULL, counter text COLLATE "C" NOT NULL, period text COLLATE "C" NOT NULL, total bigint NOT NULL,
        PRIMARY KEY (tenant_id, counter, period)
    );
    CREATE TABLE oidc_subjects (
        subject text COLLATE "C" PRIMARY KEY, tenant_id bigint, record_json bytea NOT NULL, record_sha256 text COLLATE "C" NOT NULL
    );
    CREATE INDEX oidc_subjects_by_tenant ON oidc_subjects (tenant_id);
    -- The registry generation: bumped in the same transaction as any change to API keys,
    -- tenants or namespaces, on whichever node makes it, and announced to every node.
    CREATE FUNCTION dg_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE dg_meta SET registry_generation = registry_generation + 1;
        PERFORM pg_notify('dg_registry', '');
        RETURN NULL;
    END $$;
    CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION dg_registry_changed();
    CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
        FOR EACH STATEMENT EXECUTE FUNCTION dg_registry_changed();
    CREATE TRIGGER namespaces_changed AFTER INSERT OR UPDATE OR DELETE ON namespaces
        FOR EACH STATEMENT EXECUTE FUNCTION dg_registry_changed();
    "#,
    // v2: a write is one statement, so one round trip and no network wait while the chain
    // head is locked (docs/scale-out.md, "The write path"). `dg_append` links entries into
    // the chain: the node sends each entry's canonical JSON in four parts, around the three
    // values only the head knows (prev_sha256, seq, time_ms), and the entry's bytes and
    // sha256 are made here exactly as the node would make them. `dg_save_run` writes a run
    // with its kept totals and then appends, in the statement's own transaction.
    r#"
    CREATE FUNCTION dg_append(p_time bigint, p_parts bytea[], p_tenants bigint[],
                              u_tenants bigint[], u_requests text[], u_counters text[], u_keys text[],
                              u_amounts bigint[], p_every bigint)
    RETURNS TABLE (head_seq bigint, head_sha256 text, head_time_ms bigint, checkpoint_due boolean)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        h_seq bigint; h_sha text; h_time bigint; t bigint; entry bytea; period text; last_checkpoint bigint;
    BEGIN
        -- The head is the last row a transaction locks (after its run and tenant rows).
        SELECT seq, sha256, time_ms INTO h_seq, h_sha, h_time FROM audit_head FOR UPDATE;
        t := greatest(p_time, h_time);
        IF coalesce(array_length(p_parts, 1), 0) <> 4 * coalesce(array_length(p_tenants, 1), 0) THEN
            RAISE EXCEPTION 'audit append: % parts for % entries', array_length(p_parts, 1), array_length(p_tenants, 1)
                USING ERRCODE = '22023';
        END IF;
        FOR i IN 1 .. coalesce(array_length(p_tenants, 1), 0) LOOP
            h_seq := h_seq + 1;
            entry := p_parts[4 * i - 3] || convert_to(h_sha, 'UTF8') || p_parts[4 * i - 2] || convert_to(h_seq::text, 'UTF8')
                  || p_parts[4 * i - 1] || convert_to(t::text, 'UTF8') || p_parts[4 * i];
            h_sha := encode(sha256(entry), 'hex');
            INSERT INTO audit_log (seq, entry_json, entry_sha256, tenant_id, time_ms) VALUES (h_seq, entry, h_sha, p_tenants[i], t);
        END LOOP;
        UPDATE audit_head SET seq = h_seq, sha256 = h_sha, time_ms = t;
        -- Usage rows in the batch's order; a request id already counted is not counted again.
        period := to_char(to_timestamp(t / 1000) AT TIME ZONE 'UTC', 'YYYY-MM');
        FOR i IN 1 .. coalesce(array_length(u_tenants, 1), 0) LOOP
            INSERT INTO usage_ledger (tenant_id, request_id, counter, key_id, amount, at_ms)
                VALUES (u_tenants[i], u_requests[i], u_counters[i], u_keys[i], u_amounts[i], t) ON CONFLICT DO NOTHING;
            IF FOUND THEN
                INSERT INTO usage_totals (tenant_id, counter, total) VALUES (u_tenants[i], u_counters[i], u_amounts[i])
                    ON CONFLICT (tenant_id, counter) DO UPDATE SET total = usage_totals.total + EXCLUDED.total;
                INSERT INTO usage_periods (tenant_id, counter, period, total) VALUES (u_tenants[i], u_counters[i], period, u_amounts[i])
                    ON CONFLICT (tenant_id, counter, period) DO UPDATE SET total = usage_periods.total + EXCLUDED.total;
            END IF;
        END LOOP;
        SELECT coalesce(max(entry_count), 0) INTO last_checkpoint FROM audit_checkpoints;
        RETURN QUERY SELECT h_seq, h_sha, t, p_every > 0 AND h_seq > 0 AND h_seq >= last_checkpoint + p_every;
    END $$;

    -- A run write's move of its tenant's kept totals (bytes, and runs by status), refused
    -- with DGL01 (the message is the total it would reach) past the tenant's storage bound.
    CREATE FUNCTION dg_move_tenant_totals(p_tenant bigint, p_delta bigint, p_moved bigint[], p_limit bigint)
    RETURNS void LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        bytes_after bigint;
    BEGIN
        INSERT INTO tenant_usage (tenant_id, run_bytes, runs_active, runs_completed, runs_failed)
            VALUES (p_tenant, p_delta, p_moved[1], p_moved[2], p_moved[3])
            ON CONFLICT (tenant_id) DO UPDATE SET run_bytes = tenant_usage.run_bytes + p_delta,
                runs_active = tenant_usage.runs_active + p_moved[1], runs_completed = tenant_usage.runs_completed + p_moved[2],
                runs_failed = tenant_usage.runs_failed + p_moved[3]
            RETURNING tenant_usage.run_bytes INTO bytes_after;
        IF p_delta > 0 AND bytes_after > p_limit THEN
            RAISE EXCEPTION '%', bytes_after USING ERRCODE = 'DGL01';
        END IF;
    END $$;

    -- Errors a node maps back to its own: DGC01 a conflict (the run exists, or moved on),
    -- DGL01 the tenant's run storage bound (the message is the total it would reach),
    -- DGS01 a stored status this schema does not know.
    CREATE FUNCTION dg_save_run(p_tenant bigint, p_namespace bigint, p_run text, p_scenario text, p_status text,
                                p_expected bigint, p_doc bytea, p_sha text, p_saved bigint, p_statuses text[],
                                p_limit bigint, p_time bigint, p_parts bytea[], p_tenants bigint[],
                                u_tenants bigint[], u_requests text[], u_counters text[], u_keys text[],
                                u_amounts bigint[], p_every bigint)
    RETURNS TABLE (version bigint, head_seq bigint, head_sha256 text, head_time_ms bigint, checkpoint_due boolean)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        old_len bigint := 0; old_status text; new_version bigint; moved bigint[] := ARRAY[0, 0, 0];
        delta bigint;
    BEGIN
        IF p_expected IS NULL THEN
            INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms)
                VALUES (p_tenant, p_namespace, p_run, p_scenario, p_status, 1, p_doc, p_sha, p_saved) ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'run already exists: %', p_run USING ERRCODE = 'DGC01';
            END IF;
            new_version := 1;
        ELSE
            -- Re-checked on the committed row after a wait: a run moved on meanwhile is not found.
            SELECT length(r.state_json), r.status INTO old_len, old_status FROM runs r
                WHERE r.tenant_id = p_tenant AND r.namespace_id = p_namespace AND r.run_id = p_run AND r.version = p_expected
                FOR UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'run % was changed concurrently', p_run USING ERRCODE = 'DGC01';
            END IF;
            IF array_position(p_statuses, old_status) IS NULL THEN
                RAISE EXCEPTION 'unknown stored status %', old_status USING ERRCODE = 'DGS01';
            END IF;
            UPDATE runs SET status = p_status, version = p_expected + 1, state_json = p_doc, state_sha256 = p_sha,
                    saved_at_ms = p_saved
                WHERE tenant_id = p_tenant AND namespace_id = p_namespace AND run_id = p_run;
            new_version := p_expected + 1;
            moved[array_position(p_statuses, old_status)] := -1;
        END IF;
        moved[array_position(p_statuses, p_status)] := moved[array_position(p_statuses, p_status)] + 1;
        delta := length(p_doc) - old_len;
        -- The tenant's kept totals, then the chain head: always in this order.
        PERFORM dg_move_tenant_totals(p_tenant, delta, moved, p_limit);
        IF coalesce(array_length(p_tenants, 1), 0) = 0 AND coalesce(array_length(u_tenants, 1), 0) = 0 THEN
            RETURN QUERY SELECT new_version, NULL::bigint, NULL::text, NULL::bigint, false;
        ELSE
            RETURN QUERY SELECT new_version, a.head_seq, a.head_sha256, a.head_time_ms, a.checkpoint_due
                FROM dg_append(p_time, p_parts, p_tenants, u_tenants, u_requests, u_counters, u_keys, u_amounts, p_every) a;
        END IF;
    END $$;

    -- A group of one node's run writes in one statement: one head lock and one commit for
    -- all of them. The node sorts the group by (tenant, namespace, run); the runs' rows are
    -- written first, each in a subtransaction of its own so that a conflict (DGC01) is that
    -- run's answer alone (`errors`), then the tenants' totals (in tenant order), then the
    -- audit entries and usage rows of the runs written, in the group's order. Every writer
    -- thus locks runs, tenants and the head in the same order. A tenant's storage bound
    -- (DGL01) or an unknown stored status (DGS01) fails the whole statement: the node then
    -- writes the group's runs one by one with dg_save_run, which names the run at fault.
    CREATE FUNCTION dg_save_runs(p_tenants bigint[], p_namespaces bigint[], p_runs text[], p_scenarios text[],
                                 p_new_statuses text[], p_expected bigint[], p_docs bytea[], p_shas text[],
                                 p_saved bigint[], p_statuses text[], p_limit bigint, p_time bigint,
                                 p_parts bytea[], p_entry_tenants bigint[], p_entries integer[],
                                 u_tenants bigint[], u_requests text[], u_counters text[], u_keys text[],
                                 u_amounts bigint[], p_usages integer[], p_every bigint)
    RETURNS TABLE (versions bigint[], errors text[], head_seq bigint, head_sha256 text, head_time_ms bigint,
                   checkpoint_due boolean)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        n integer := coalesce(array_length(p_runs, 1), 0);
        out_versions bigint[] := array_fill(NULL::bigint, ARRAY[n]);
        out_errors text[] := array_fill(NULL::text, ARRAY[n]);
        old_lens bigint[] := array_fill(0::bigint, ARRAY[n]);
        old_slots integer[] := array_fill(NULL::integer, ARRAY[n]);
        old_len bigint; old_status text; moved bigint[]; delta bigint;
        a_parts bytea[] := '{}'; a_tenants bigint[] := '{}';
        b_tenants bigint[] := '{}'; b_requests text[] := '{}'; b_counters text[] := '{}'; b_keys text[] := '{}';
        b_amounts bigint[] := '{}';
        part_at integer := 1; usage_at integer := 1;
    BEGIN
        FOR i IN 1 .. n LOOP
            BEGIN
                IF p_expected[i] IS NULL THEN
                    INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms)
                        VALUES (p_tenants[i], p_namespaces[i], p_runs[i], p_scenarios[i], p_new_statuses[i], 1, p_docs[i], p_shas[i], p_saved[i])
                        ON CONFLICT DO NOTHING;
                    IF NOT FOUND THEN
                        RAISE EXCEPTION 'run already exists: %', p_runs[i] USING ERRCODE = 'DGC01';
                    END IF;
                    out_versions[i] := 1;
                ELSE
                    SELECT length(r.state_json), r.status INTO old_len, old_status FROM runs r
                        WHERE r.tenant_id = p_tenants[i] AND r.namespace_id = p_namespaces[i] AND r.run_id = p_runs[i]
                          AND r.version = p_expected[i]
                        FOR UPDATE;
                    IF NOT FOUND THEN
                        RAISE EXCEPTION 'run % was changed concurrently', p_runs[i] USING ERRCODE = 'DGC01';
                    END IF;
                    IF array_position(p_statuses, old_status) IS NULL THEN
                        RAISE EXCEPTION 'unknown stored status %', old_status USING ERRCODE = 'DGS01';
                    END IF;
                    UPDATE runs SET status = p_new_statuses[i], version = p_expected[i] + 1, state_json = p_docs[i],
                            state_sha256 = p_shas[i], saved_at_ms = p_saved[i]
                        WHERE tenant_id = p_tenants[i] AND namespace_id = p_namespaces[i] AND run_id = p_runs[i];
                    out_versions[i] := p_expected[i] + 1;
                    old_lens[i] := old_len;
                    old_slots[i] := array_position(p_statuses, old_status);
                END IF;
            EXCEPTION WHEN SQLSTATE 'DGC01' THEN
                out_versions[i] := NULL;
                out_errors[i] := SQLERRM;
            END;
        END LOOP;
        FOR i IN 1 .. n LOOP
            IF out_errors[i] IS NULL THEN
                moved := ARRAY[0, 0, 0];
                IF old_slots[i] IS NOT NULL THEN
                    moved[old_slots[i]] := -1;
                END IF;
                moved[array_position(p_statuses, p_new_statuses[i])] := moved[array_position(p_statuses, p_new_statuses[i])] + 1;
                delta := length(p_docs[i]) - old_lens[i];
                PERFORM dg_move_tenant_totals(p_tenants[i], delta, moved, p_limit);
                IF p_entries[i] > 0 THEN
                    a_parts := a_parts || p_parts[part_at : part_at + 4 * p_entries[i] - 1];
                    a_tenants := a_tenants || p_entry_tenants[(part_at + 3) / 4 : (part_at + 3) / 4 + p_entries[i] - 1];
                END IF;
                IF p_usages[i] > 0 THEN
                    b_tenants := b_tenants || u_tenants[usage_at : usage_at + p_usages[i] - 1];
                    b_requests := b_requests || u_requests[usage_at : usage_at + p_usages[i] - 1];
                    b_counters := b_counters || u_counters[usage_at : usage_at + p_usages[i] - 1];
                    b_keys := b_keys || u_keys[usage_at : usage_at + p_usages[i] - 1];
                    b_amounts := b_amounts || u_amounts[usage_at : usage_at + p_usages[i] - 1];
                END IF;
            END IF;
            part_at := part_at + 4 * p_entries[i];
            usage_at := usage_at + p_usages[i];
        END LOOP;
        IF coalesce(array_length(a_tenants, 1), 0) = 0 AND coalesce(array_length(b_tenants, 1), 0) = 0 THEN
            RETURN QUERY SELECT out_versions, out_errors, NULL::bigint, NULL::text, NULL::bigint, false;
        ELSE
            RETURN QUERY SELECT out_versions, out_errors, a.head_seq, a.head_sha256, a.head_time_ms, a.checkpoint_due
                FROM dg_append(p_time, a_parts, a_tenants, b_tenants, b_requests, b_counters, b_keys, b_amounts, p_every) a;
        END IF;
    END $$;
    "#,
    // v3: run writes with fewer statements inside the database (docs/scale-out.md, "What
    // each change did"): a group's audit entries and usage rows are inserted as one
    // statement each, usage totals and a tenant's kept totals move once per key of the
    // group rather than once per row, and a run's conflict is recorded without a
    // subtransaction; every stored byte and lock order is as in v2. `dg_write_runs` is the
    // group write (a lone write is a group of one) and refuses a request's start whose
    // namespace was deleted meanwhile (DGN01).
    r#"
    CREATE OR REPLACE FUNCTION dg_append(p_time bigint, p_parts bytea[], p_tenants bigint[],
                                         u_tenants bigint[], u_requests text[], u_counters text[], u_keys text[],
                                         u_amounts bigint[], p_every bigint)
    RETURNS TABLE (head_seq bigint, head_sha256 text, head_time_ms bigint, checkpoint_due boolean)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        h_seq bigint; h_sha text; h_time bigint; t bigint; entry bytea; period text; last_checkpoint bigint;
        n integer := coalesce(array_length(p_tenants, 1), 0);
        seqs bigint[] := '{}'; entries bytea[] := '{}'; shas text[] := '{}';
    BEGIN
        -- The head is the last row a transaction locks (after its run and tenant rows).
        SELECT seq, sha256, time_ms INTO h_seq, h_sha, h_time FROM audit_head FOR UPDATE;
        t := greatest(p_time, h_time);
        IF coalesce(array_length(p_parts, 1), 0) <> 4 * n THEN
            RAISE EXCEPTION 'audit append: % parts for % entries', array_length(p_parts, 1), array_length(p_tenants, 1)
                USING ERRCODE = '22023';
        END IF;
        FOR i IN 1 .. n LOOP
            h_seq := h_seq + 1;
            entry := p_parts[4 * i - 3] || convert_to(h_sha, 'UTF8') || p_parts[4 * i - 2] || convert_to(h_seq::text, 'UTF8')
                  || p_parts[4 * i - 1] || convert_to(t::text, 'UTF8') || p_parts[4 * i];
            h_sha := encode(sha256(entry), 'hex');
            seqs[i] := h_seq;
            entries[i] := entry;
            shas[i] := h_sha;
        END LOOP;
        IF n > 0 THEN
            INSERT INTO audit_log (seq, entry_json, entry_sha256, tenant_id, time_ms)
                SELECT e.seq, e.entry, e.sha, e.tenant, t FROM unnest(seqs, entries, shas, p_tenants) AS e(seq, entry, sha, tenant);
        END IF;
        UPDATE audit_head SET seq = h_seq, sha256 = h_sha, time_ms = t;
        -- Usage rows: a request id already counted is not counted again (nor twice in one
        -- batch); the totals move once per tenant and counter, in that order.
        IF coalesce(array_length(u_tenants, 1), 0) > 0 THEN
            period := to_char(to_timestamp(t / 1000) AT TIME ZONE 'UTC', 'YYYY-MM');
            WITH counted AS (
                INSERT INTO usage_ledger (tenant_id, request_id, counter, key_id, amount, at_ms)
                    SELECT u.tenant, u.request, u.counter, u.key_id, u.amount, t
                    FROM unnest(u_tenants, u_requests, u_counters, u_keys, u_amounts) WITH ORDINALITY AS u(tenant, request, counter, key_id, amount, ord)
                    ORDER BY u.ord
                    ON CONFLICT DO NOTHING
                    RETURNING tenant_id, counter, amount
            ), sums AS (
                SELECT c.tenant_id, c.counter, sum(c.amount)::bigint AS total FROM counted c GROUP BY c.tenant_id, c.counter
            ), totals AS (
                INSERT INTO usage_totals (tenant_id, counter, total)
                    SELECT s.tenant_id, s.counter, s.total FROM sums s ORDER BY s.tenant_id, s.counter
                    ON CONFLICT (tenant_id, counter) DO UPDATE SET total = usage_totals.total + EXCLUDED.total
            )
            INSERT INTO usage_periods (tenant_id, counter, period, total)
                SELECT s.tenant_id, s.counter, period, s.total FROM sums s ORDER BY s.tenant_id, s.counter
                ON CONFLICT (tenant_id, counter, period) DO UPDATE SET total = usage_periods.total + EXCLUDED.total;
        END IF;
        SELECT coalesce(max(entry_count), 0) INTO last_checkpoint FROM audit_checkpoints;
        RETURN QUERY SELECT h_seq, h_sha, t, p_every > 0 AND h_seq > 0 AND h_seq >= last_checkpoint + p_every;
    END $$;

    CREATE FUNCTION dg_write_runs(p_tenants bigint[], p_namespaces bigint[], p_runs text[], p_scenarios text[],
                                 p_new_statuses text[], p_expected bigint[], p_docs bytea[], p_shas text[],
                                 p_saved bigint[], p_statuses text[], p_limit bigint, p_time bigint,
                                 p_parts bytea[], p_entry_tenants bigint[], p_entries integer[],
                                 u_tenants bigint[], u_requests text[], u_counters text[], u_keys text[],
                                 u_amounts bigint[], p_usages integer[], p_every bigint,
                                 p_need_namespaces boolean[])
    RETURNS TABLE (versions bigint[], errors text[], error_codes text[], head_seq bigint, head_sha256 text, head_time_ms bigint,
                   checkpoint_due boolean)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        n integer := coalesce(array_length(p_runs, 1), 0);
        out_versions bigint[] := array_fill(NULL::bigint, ARRAY[n]);
        out_errors text[] := array_fill(NULL::text, ARRAY[n]);
        out_codes text[] := array_fill(NULL::text, ARRAY[n]);
        d_bytes bigint[] := array_fill(0::bigint, ARRAY[n]);
        d_active bigint[] := array_fill(0::bigint, ARRAY[n]);
        d_completed bigint[] := array_fill(0::bigint, ARRAY[n]);
        d_failed bigint[] := array_fill(0::bigint, ARRAY[n]);
        moved bigint[]; old_len bigint; old_status text; old_slot integer; new_slot integer;
        tenant bigint; s_bytes bigint; s_active bigint; s_completed bigint; s_failed bigint;
        bytes_after bigint; running bigint;
        a_parts bytea[] := '{}'; a_tenants bigint[] := '{}';
        b_tenants bigint[] := '{}'; b_requests text[] := '{}'; b_counters text[] := '{}'; b_keys text[] := '{}';
        b_amounts bigint[] := '{}';
        part_at integer := 1; usage_at integer := 1;
    BEGIN
        -- The runs' rows, in the group's (tenant, namespace, run) order. A conflict is that
        -- run's answer alone; nothing of it was written.
        FOR i IN 1 .. n LOOP
            old_len := 0;
            old_slot := NULL;
            IF p_expected[i] IS NULL AND p_need_namespaces[i] THEN
                -- A request's start: its namespace must still be registered, and stays so
                -- until this commits (a delete locks the row before it checks for runs).
                PERFORM 1 FROM namespaces ns WHERE ns.tenant_id = p_tenants[i] AND ns.namespace_id = p_namespaces[i]
                    FOR KEY SHARE;
                IF NOT FOUND THEN
                    out_errors[i] := format('namespace %s/%s (deleted)', p_tenants[i], p_namespaces[i]);
                    out_codes[i] := 'DGN01';
                    CONTINUE;
                END IF;
            END IF;
            IF p_expected[i] IS NULL THEN
                INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, status, version, state_json, state_sha256, saved_at_ms)
                    VALUES (p_tenants[i], p_namespaces[i], p_runs[i], p_scenarios[i], p_new_statuses[i], 1, p_docs[i], p_shas[i], p_saved[i])
                    ON CONFLICT DO NOTHING;
                IF NOT FOUND THEN
                    out_errors[i] := format('run already exists: %s', p_runs[i]);
                    out_codes[i] := 'DGC01';
                    CONTINUE;
                END IF;
                out_versions[i] := 1;
            ELSE
                -- Re-checked on the committed row after a wait: a run moved on meanwhile is not found.
                SELECT length(r.state_json), r.status INTO old_len, old_status FROM runs r
                    WHERE r.tenant_id = p_tenants[i] AND r.namespace_id = p_namespaces[i] AND r.run_id = p_runs[i]
                      AND r.version = p_expected[i]
                    FOR UPDATE;
                IF NOT FOUND THEN
                    out_errors[i] := format('run %s was changed concurrently', p_runs[i]);
                    out_codes[i] := 'DGC01';
                    CONTINUE;
                END IF;
                old_slot := array_position(p_statuses, old_status);
                IF old_slot IS NULL THEN
                    RAISE EXCEPTION 'unknown stored status %', old_status USING ERRCODE = 'DGS01';
                END IF;
                UPDATE runs SET status = p_new_statuses[i], version = p_expected[i] + 1, state_json = p_docs[i],
                        state_sha256 = p_shas[i], saved_at_ms = p_saved[i]
                    WHERE tenant_id = p_tenants[i] AND namespace_id = p_namespaces[i] AND run_id = p_runs[i];
                out_versions[i] := p_expected[i] + 1;
            END IF;
            moved := ARRAY[0, 0, 0];
            IF old_slot IS NOT NULL THEN
                moved[old_slot] := -1;
            END IF;
            new_slot := array_position(p_statuses, p_new_statuses[i]);
            moved[new_slot] := moved[new_slot] + 1;
            d_bytes[i] := length(p_docs[i]) - old_len;
            d_active[i] := moved[1];
            d_completed[i] := moved[2];
            d_failed[i] := moved[3];
        END LOOP;
        -- Each tenant's kept totals once, in tenant order; its storage bound write by write
        -- in the group's order: a write that grows the total past it fails the statement
        -- (DGL01, the total it would reach), and the node writes the group one by one.
        FOR tenant, s_bytes, s_active, s_completed, s_failed IN
            SELECT w.tenant, sum(w.bytes)::bigint, sum(w.active)::bigint, sum(w.completed)::bigint, sum(w.failed)::bigint
            FROM unnest(p_tenants, d_bytes, d_active, d_completed, d_failed, out_errors)
                AS w(tenant, bytes, active, completed, failed, error)
            WHERE w.error IS NULL GROUP BY w.tenant ORDER BY w.tenant
        LOOP
            INSERT INTO tenant_usage (tenant_id, run_bytes, runs_active, runs_completed, runs_failed)
                VALUES (tenant, s_bytes, s_active, s_completed, s_failed)
                ON CONFLICT (tenant_id) DO UPDATE SET run_bytes = tenant_usage.run_bytes + s_bytes,
                    runs_active = tenant_usage.runs_active + s_active,
                    runs_completed = tenant_usage.runs_completed + s_completed,
                    runs_failed = tenant_usage.runs_failed + s_failed
                RETURNING tenant_usage.run_bytes INTO bytes_after;
            running := bytes_after - s_bytes;
            FOR i IN 1 .. n LOOP
                IF p_tenants[i] = tenant AND out_errors[i] IS NULL THEN
                    running := running + d_bytes[i];
                    IF d_bytes[i] > 0 AND running > p_limit THEN
                        RAISE EXCEPTION '%', running USING ERRCODE = 'DGL01';
                    END IF;
                END IF;
            END LOOP;
        END LOOP;
        -- The audit entries and usage rows of the runs written, in the group's order.
        IF n > 0 AND cardinality(array_remove(out_errors, NULL::text)) = 0 THEN
            -- Every run written: the batch as sent.
            a_parts := p_parts;
            a_tenants := p_entry_tenants;
            b_tenants := u_tenants; b_requests := u_requests; b_counters := u_counters; b_keys := u_keys;
            b_amounts := u_amounts;
        ELSE
            FOR i IN 1 .. n LOOP
                IF out_errors[i] IS NULL THEN
                    IF p_entries[i] > 0 THEN
                        a_parts := a_parts || p_parts[part_at : part_at + 4 * p_entries[i] - 1];
                        a_tenants := a_tenants || p_entry_tenants[(part_at + 3) / 4 : (part_at + 3) / 4 + p_entries[i] - 1];
                    END IF;
                    IF p_usages[i] > 0 THEN
                        b_tenants := b_tenants || u_tenants[usage_at : usage_at + p_usages[i] - 1];
                        b_requests := b_requests || u_requests[usage_at : usage_at + p_usages[i] - 1];
                        b_counters := b_counters || u_counters[usage_at : usage_at + p_usages[i] - 1];
                        b_keys := b_keys || u_keys[usage_at : usage_at + p_usages[i] - 1];
                        b_amounts := b_amounts || u_amounts[usage_at : usage_at + p_usages[i] - 1];
                    END IF;
                END IF;
                part_at := part_at + 4 * p_entries[i];
                usage_at := usage_at + p_usages[i];
            END LOOP;
        END IF;
        IF coalesce(array_length(a_tenants, 1), 0) = 0 AND coalesce(array_length(b_tenants, 1), 0) = 0 THEN
            RETURN QUERY SELECT out_versions, out_errors, out_codes, NULL::bigint, NULL::text, NULL::bigint, false;
        ELSE
            RETURN QUERY SELECT out_versions, out_errors, out_codes, a.head_seq, a.head_sha256, a.head_time_ms, a.checkpoint_due
                FROM dg_append(p_time, a_parts, a_tenants, b_tenants, b_requests, b_counters, b_keys, b_amounts, p_every) a;
        END IF;
    END $$;

    -- v2's group write, kept for nodes of schema v2 while an upgrade rolls through the
    -- deployment (no namespace rule); this build's nodes call dg_write_runs.
    CREATE OR REPLACE FUNCTION dg_save_runs(p_tenants bigint[], p_namespaces bigint[], p_runs text[], p_scenarios text[],
                                 p_new_statuses text[], p_expected bigint[], p_docs bytea[], p_shas text[],
                                 p_saved bigint[], p_statuses text[], p_limit bigint, p_time bigint,
                                 p_parts bytea[], p_entry_tenants bigint[], p_entries integer[],
                                 u_tenants bigint[], u_requests text[], u_counters text[], u_keys text[],
                                 u_amounts bigint[], p_usages integer[], p_every bigint)
    RETURNS TABLE (versions bigint[], errors text[], head_seq bigint, head_sha256 text, head_time_ms bigint,
                   checkpoint_due boolean)
    LANGUAGE sql AS $$
        SELECT w.versions, w.errors, w.head_seq, w.head_sha256, w.head_time_ms, w.checkpoint_due
        FROM dg_write_runs(p_tenants, p_namespaces, p_runs, p_scenarios, p_new_statuses, p_expected, p_docs, p_shas,
                           p_saved, p_statuses, p_limit, p_time, p_parts, p_entry_tenants, p_entries, u_tenants,
                           u_requests, u_counters, u_keys, u_amounts, p_usages, p_every,
                           array_fill(false, ARRAY[coalesce(array_length(p_runs, 1), 0)])) w
    $$;
    "#,
    // v4: the write lock (write_group.rs), an advisory lock ("dg-write" in ASCII) every
    // group takes before anything else. `dg_take_write_lock` takes it and says whether it had
    // to wait (another node's group held it); `dg_write_group` is `dg_write_runs` behind it,
    // with that answer last. A v3 node of a rolling upgrade keeps calling `dg_write_runs`
    // without the lock: it never waits for the lock, so no lock cycle can form.
    r#"
    CREATE FUNCTION dg_take_write_lock() RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        IF pg_try_advisory_xact_lock(7234801317437863013) THEN
            RETURN false;
        END IF;
        PERFORM pg_advisory_xact_lock(7234801317437863013);
        RETURN true;
    END $$;

    -- The arguments are dg_write_runs' (p_tenants to p_need_namespaces), passed on as they are.
    CREATE FUNCTION dg_write_group(bigint[], bigint[], text[], text[], text[], bigint[], bytea[], text[], bigint[],
                                   text[], bigint, bigint, bytea[], bigint[], integer[], bigint[], text[], text[],
                                   text[], bigint[], integer[], bigint, boolean[])
    RETURNS TABLE (versions bigint[], errors text[], error_codes text[], head_seq bigint, head_sha256 text, head_time_ms bigint,
                   checkpoint_due boolean, waited boolean)
    LANGUAGE plpgsql AS $$
    DECLARE
        w boolean := dg_take_write_lock();
    BEGIN
        RETURN QUERY SELECT r.versions, r.errors, r.error_codes, r.head_seq, r.head_sha256, r.head_time_ms,
                            r.checkpoint_due, w
            FROM dg_write_runs($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                               $20, $21, $22, $23) r;
    END $$;
    "#,
];

/// The schema version of the database (0 for one without the appliance's tables).
async fn current_version(client: &impl deadpool_postgres::GenericClient) -> Result<i64, StoreError> {
    let row =
        client.query_one("SELECT to_regclass('dg_meta') IS NOT NULL", &[]).await.map_err(pg("read schema version"))?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client.query_opt("SELECT version FROM dg_meta", &[]).await.map_err(pg("read schema version"))?;
    Ok(row.map_or(0, |row| row.get(0)))
}

/// Brings the database to [`PG_SCHEMA_VERSION`] under the migration lock; returns the
/// version found before.
///
/// # Errors
/// [`StoreError::NewerSchema`], or the database's errors (nothing of a failed step stays).
pub(crate) async fn migrate(client: &mut Object, instance_id: &str) -> Result<i64, StoreError> {
    let tx = client.transaction().await.map_err(pg("begin migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg("take migration lock"))?;
    let found = current_version(&tx).await?;
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { found, supported: PG_SCHEMA_VERSION });
    }
    let first = usize::try_from(found).map_err(|_| StoreError::NewerSchema { found, supported: 0 })?;
    for step in MIGRATIONS.iter().skip(first) {
        tx.batch_execute(step).await.map_err(pg("apply migration"))?;
    }
    if found == 0 {
        tx.execute("INSERT INTO dg_meta (version, instance_id) VALUES ($1, $2)", &[&PG_SCHEMA_VERSION, &instance_id])
            .await
            .map_err(pg("record schema version"))?;
        tx.execute("INSERT INTO audit_head (seq, sha256, time_ms) VALUES (0, $1, 0)", &[&GENESIS_SHA256])
            .await
            .map_err(pg("start the audit chain"))?;
    } else if found < PG_SCHEMA_VERSION {
        tx.execute("UPDATE dg_meta SET version = $1", &[&PG_SCHEMA_VERSION])
            .await
            .map_err(pg("record schema version"))?;
    }
    tx.commit().await.map_err(pg("commit migration"))?;
    Ok(found)
}

/// The schema version, without changing anything.
///
/// # Errors
/// The database's errors.
pub(crate) async fn version(client: &Object) -> Result<i64, StoreError> {
    current_version(client).await
}
