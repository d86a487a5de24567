# The one scoutfs image: the agent, the CSI driver and the operator are entry points of the same
# program (bin/scoutfs):
#   agent (node DaemonSet):   scoutfs operator node --config /etc/scoutfs/filesystem.json
#                             (runs `scoutfs mount --foreground` and publishes its status)
#   CSI driver:               scoutfs csi ...
#   operator (Deployment):    scoutfs operator --metrics-address=:8080 ...
# Build:  docker build -t ghcr.io/scoutfs/scoutfs:0.1.0 .
# The operator's Deployment runs it as user 65532 with a read-only root filesystem; the node
# pods run it privileged (FUSE, block devices, Bidirectional mount propagation).

FROM node:20-bookworm-slim AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends build-essential python3 pkg-config libfuse-dev libfuse3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# the prepare script builds dist/, which needs the sources: install without scripts, build after
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY node-agent ./node-agent
COPY csi ./csi
COPY operator ./operator
COPY proto ./proto
COPY bin ./bin
COPY charts ./charts
COPY scripts/build-fuse3.sh ./scripts/build-fuse3.sh
# native modules (fuse-native, and our libfuse 3 addon: the default frontend) are built now
# that their sources are here
RUN npm rebuild \
 && bash scripts/build-fuse3.sh \
 && npx tsc -p tsconfig.json \
 && npm prune --omit=dev --ignore-scripts \
 && rm -rf dist/test dist/bench dist/scripts

FROM node:20-bookworm-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libfuse2 fuse3 util-linux ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/scoutfs
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/bin ./bin
COPY --from=build /src/proto ./proto
COPY --from=build /src/node-agent/native/fuse3/build/Release/fuse3_lowlevel.node ./node-agent/native/fuse3/build/Release/
COPY --from=build /src/charts/scoutfs/crds ./charts/scoutfs/crds
RUN ln -s /opt/scoutfs/bin/scoutfs /usr/local/bin/scoutfs
ENV NODE_ENV=production
ENTRYPOINT ["/usr/bin/tini", "--", "scoutfs"]
CMD ["--help"]
