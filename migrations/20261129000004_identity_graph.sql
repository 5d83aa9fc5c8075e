-- The built-in identity graph (IDENTITY_GRAPH_SINK=postgres): identifier
-- nodes and user→identifier links. Two users sharing a link are connected.
CREATE TABLE identity_graph_users (
    user_id    bigint PRIMARY KEY,
    email      text,
    phone      text,
    created_at timestamptz,
    synced_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identity_graph_identifiers (
    id    bigserial PRIMARY KEY,
    kind  text NOT NULL,
    value text NOT NULL,
    UNIQUE (kind, value)
);

CREATE TABLE identity_graph_links (
    user_id       bigint NOT NULL,
    identifier_id bigint NOT NULL REFERENCES identity_graph_identifiers (id),
    PRIMARY KEY (user_id, identifier_id)
);
CREATE INDEX identity_graph_links_identifier ON identity_graph_links (identifier_id);
