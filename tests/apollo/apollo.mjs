// Apollo Client 4, unchanged, against two snaptree server processes on one database
// (tests/clients.rs starts them): PersistedQueryLink over POST and GET, and
// BatchHttpLink. Every HTTP request the client sends is recorded, to check the
// protocol as it went over the wire, not only the answers.
import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { BatchHttpLink } from "@apollo/client/link/batch-http";

const [first, second] = process.env.SNAPTREE_URLS.split(" ");
const token = process.env.SNAPTREE_TOKEN;
const headers = { authorization: `Bearer ${token}` };

/** fetch, recording each request's method and body (or query string). */
function recording(sent) {
  return async (url, init) => {
    sent.push({ method: init.method || "GET", url: String(url), body: init.body ? JSON.parse(init.body) : null });
    return fetch(url, init);
  };
}

const sha256 = (text) => createHash("sha256").update(text).digest("hex");
const ME = gql`query Me { me { role } }`;

function client(link) {
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

// 1. The first server has never seen the query: the hash alone, PersistedQueryNotFound,
// then the document with its hash.
{
  const sent = [];
  const link = new PersistedQueryLink({ sha256 }).concat(new HttpLink({ uri: first, headers, fetch: recording(sent) }));
  const { data } = await client(link).query({ query: ME });
  assert.equal(data.me.role, "OPERATOR");
  assert.equal(sent.length, 2, JSON.stringify(sent));
  assert.equal(sent[0].body.query, undefined, "the first request holds the hash alone");
  assert.match(sent[0].body.extensions.persistedQuery.sha256Hash, /^[0-9a-f]{64}$/);
  assert.ok(sent[1].body.query.includes("me"), "the second holds the document");
  console.log("ok: PersistedQueryLink: an unknown hash, then the document with it");
}

// 2. A fresh client on the second server, by GET: the hash alone is enough there.
{
  const sent = [];
  const link = new PersistedQueryLink({ sha256, useGETForHashedQueries: true })
    .concat(new HttpLink({ uri: second, headers, fetch: recording(sent) }));
  const { data } = await client(link).query({ query: ME });
  assert.equal(data.me.role, "OPERATOR");
  assert.equal(sent.length, 1, JSON.stringify(sent));
  assert.equal(sent[0].method, "GET");
  assert.ok(!new URL(sent[0].url).searchParams.has("query"), sent[0].url);
  console.log("ok: PersistedQueryLink: the second server knows the hash the first learned, by GET");
}

// 3. Three queries at once through BatchHttpLink: one request, an array, three answers.
{
  const sent = [];
  const link = new BatchHttpLink({ uri: first, headers, batchInterval: 20, batchMax: 10, fetch: recording(sent) });
  const apollo = client(link);
  const queries = [
    gql`query A { me { role } }`,
    gql`query B { me { name } }`,
    gql`query C { vms(first: 5) { edges { node { id } } } }`,
  ];
  const answers = await Promise.all(queries.map((query) => apollo.query({ query })));
  assert.equal(sent.length, 1, JSON.stringify(sent));
  assert.ok(Array.isArray(sent[0].body) && sent[0].body.length === 3, JSON.stringify(sent[0].body));
  assert.equal(answers[0].data.me.role, "OPERATOR");
  assert.equal(typeof answers[1].data.me.name, "string");
  assert.ok(Array.isArray(answers[2].data.vms.edges));
  console.log("ok: BatchHttpLink: three queries in one request, each answered");
}

// 4. Both links at once, as an app might chain them: hashes in a batch.
{
  const sent = [];
  const link = ApolloLink.from([
    new PersistedQueryLink({ sha256 }),
    new BatchHttpLink({ uri: second, headers, batchInterval: 20, fetch: recording(sent) }),
  ]);
  const { data } = await client(link).query({ query: ME });
  assert.equal(data.me.role, "OPERATOR");
  assert.equal(sent[0].body[0].query, undefined, "a known hash goes alone, in a batch");
  console.log("ok: PersistedQueryLink over BatchHttpLink");
}
