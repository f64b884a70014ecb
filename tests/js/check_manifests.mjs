// deploy/kubernetes rendered by Debian's kubectl (kustomize) and checked against the Kubernetes API schemas
// (npm kubernetes-models: the OpenAPI definitions, validated with ajv), then for what a schema cannot see:
//   - every Service selects some pod template and its ports name ports the pods declare;
//   - every probe names a declared port;
//   - the router's --prefill-dns / --decode-dns name a headless Service and a port it serves, whose pods listen
//     on it for control traffic;
//   - every flag a container passes is one its `recgpt` subcommand knows (from the binary's --help), none twice;
//   - $(VAR) references in args resolve to the container's env; a pod's grace period outlasts its drain; a CPU
//     node's memory limit holds its KV pool;
//   - every claimed PersistentVolumeClaim is part of the render; one image per overlay.
// Usage: node check_manifests.mjs KUBECTL RECGPT_BINARY KUSTOMIZE_DIR... (the deployable overlays)
import { execFileSync } from "node:child_process";
import { parseAllDocuments } from "yaml";

const [kubectl, recgpt, ...dirs] = process.argv.slice(2);
const failures = [];
const fail = (where, message) => failures.push(`${where}: ${message}`);

async function modelClass(apiVersion, kind) {
  const path = apiVersion.includes("/") ? apiVersion : `v1/${apiVersion}`.replace("v1/v1", "v1");
  return (await import(`kubernetes-models/${path}/${kind}`))[kind];
}

const helpFlags = new Map();
function flagsOf(subcommand) {
  if (!helpFlags.has(subcommand)) {
    const help = execFileSync(recgpt, [subcommand, "--help"], { encoding: "utf8" });
    helpFlags.set(subcommand, new Set(help.match(/--[a-z0-9-]+/g)));
  }
  return helpFlags.get(subcommand);
}

const units = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, K: 1e3, M: 1e6, G: 1e9, T: 1e12 };
function bytesOf(quantity) {
  const match = String(quantity).match(/^(\d+(?:\.\d+)?)([KMGT]i?)?$/);
  return match ? Number(match[1]) * (units[match[2]] ?? 1) : NaN;
}

const labelsMatch = (selector, labels) =>
  Object.entries(selector ?? {}).every(([key, value]) => labels?.[key] === value);

function checkContainer(where, pod, container) {
  const [subcommand, ...args] = container.args ?? [];
  const known = flagsOf(subcommand);
  const seen = new Set();
  for (const arg of args) {
    const flag = arg.split("=")[0];
    if (!flag.startsWith("--")) continue;
    if (!known.has(flag)) fail(where, `recgpt ${subcommand} has no flag ${flag}`);
    if (seen.has(flag)) fail(where, `${flag} given twice (recgpt refuses that)`);
    seen.add(flag);
    for (const [, name] of arg.matchAll(/\$\(([A-Z_]+)\)/g)) {
      if (!(container.env ?? []).some((variable) => variable.name === name)) fail(where, `$(${name}) is not in env`);
    }
  }
  const drain = args.find((arg) => arg.startsWith("--drain-seconds="));
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  if (drain && !(grace > Number(drain.split("=")[1]))) {
    fail(where, `terminationGracePeriodSeconds ${grace} does not outlast ${drain}`);
  }
  const pool = args.find((arg) => arg.startsWith("--kv-cache-mib="));
  const limit = container.resources?.limits?.memory;
  const onHost = !args.includes("--backend=cuda");  // the cuda backend keeps its pool in device memory
  if (pool && onHost && !(limit && bytesOf(limit) > Number(pool.split("=")[1]) * 2 ** 20)) {
    fail(where, `memory limit ${limit} does not hold ${pool} (the pool is allocated at start)`);
  }
  const portNames = new Set((container.ports ?? []).map((port) => port.name));
  for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
    const port = container[probe]?.httpGet?.port;
    if (port !== undefined && typeof port === "string" && !portNames.has(port)) {
      fail(where, `${probe} names port '${port}' the container does not declare`);
    }
  }
}

async function checkOverlay(dir) {
  let rendered;
  try {
    rendered = execFileSync(kubectl, ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    fail(dir, `kubectl kustomize: ${String(error.stderr).trim().split("\n").pop()}`);
    return;
  }
  const objects = parseAllDocuments(rendered).map((document) => document.toJSON()).filter(Boolean);
  if (objects.length === 0) fail(dir, "renders nothing");
  if (objects.some((object) => !object.kind)) fail(dir, "renders an object without a kind (kubectl apply refuses it)");
  for (const object of objects) {
    const where = `${dir}: ${object.kind}/${object.metadata?.name}`;
    if (!object.kind) continue;
    try {
      const Model = await modelClass(object.apiVersion, object.kind);
      new Model(object).validate();
    } catch (error) {
      fail(where, `schema: ${error.message.split("\n").slice(0, 4).join(" ")}`);
    }
  }
  const deployments = objects.filter((object) => object.kind === "Deployment");
  const services = objects.filter((object) => object.kind === "Service");
  const claims = new Set(objects.filter((o) => o.kind === "PersistentVolumeClaim").map((o) => o.metadata.name));
  const images = new Set();
  for (const deployment of deployments) {
    const pod = deployment.spec.template.spec;
    const where = `${dir}: Deployment/${deployment.metadata.name}`;
    if (!labelsMatch(deployment.spec.selector.matchLabels, deployment.spec.template.metadata.labels)) {
      fail(where, "its selector does not select its own pods");
    }
    for (const container of [...(pod.initContainers ?? []), ...pod.containers]) {
      images.add(container.image);
      checkContainer(`${where} container ${container.name}`, pod, container);
    }
    for (const volume of pod.volumes ?? []) {
      const claim = volume.persistentVolumeClaim?.claimName;
      if (claim && !claims.has(claim)) fail(where, `claims '${claim}', which the render does not hold`);
    }
  }
  if (images.size !== 1) fail(dir, `one image for every role, found ${[...images].join(", ")}`);
  const podsOf = (service) =>
    deployments.filter((d) => labelsMatch(service.spec.selector, d.spec.template.metadata.labels));
  for (const service of services) {
    const where = `${dir}: Service/${service.metadata.name}`;
    const pods = podsOf(service);
    if (pods.length === 0) fail(where, "selects no pods");
    for (const port of service.spec.ports) {
      const declared = pods.some((d) =>
        d.spec.template.spec.containers.some((c) =>
          (c.ports ?? []).some((p) => p.name === port.targetPort || p.containerPort === port.targetPort)));
      if (!declared) fail(where, `targetPort ${port.targetPort} is no port of its pods`);
    }
  }
  for (const deployment of deployments) {
    for (const container of deployment.spec.template.spec.containers) {
      for (const arg of container.args ?? []) {
        const match = arg.match(/^--(prefill|decode)-dns=([^:]+):(\d+)$/);
        if (!match) continue;
        const [, role, name, port] = match;
        const where = `${dir}: Deployment/${deployment.metadata.name} ${arg}`;
        const service = services.find((s) => s.metadata.name === name);
        if (!service) { fail(where, "names no Service"); continue; }
        if (service.spec.clusterIP !== "None") fail(where, "names a Service that is not headless (one address)");
        if (!service.spec.ports.some((p) => p.port === Number(port))) fail(where, `the Service has no port ${port}`);
        const listens = podsOf(service).some((d) => d.spec.template.spec.containers.some((c) =>
          c.args?.[0] === role && c.args.includes(`--port=${port}`)));
        if (!listens) fail(where, `no ${role} pod behind it listens on --port=${port}`);
      }
    }
  }
  console.log(`${dir}: ${objects.length} objects (${[...new Set(objects.map((o) => o.kind))].join(", ")})`);
}

for (const dir of dirs) await checkOverlay(dir);
if (failures.length) {
  console.log(failures.map((failure) => `FAILED ${failure}`).join("\n"));
  process.exit(1);
}
console.log(`PASS: ${dirs.length} kustomizations rendered, valid against the Kubernetes schemas and consistent`);
