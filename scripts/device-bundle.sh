#!/usr/bin/env bash
# Packs what the GPU check needs to run the Node side on a machine that has CUDA but no Node.js:
# the node binary, the four Node-API headers, node-addon-api plus the pure-JS packages lib/index.js imports
# (@huggingface/tokenizers, pngjs; onnxruntime-node loads only in the sampling worker), and the compiled lib/.
# Writes .device/node-bundle.tar.xz (ignored by git, about 25 MB); scripts/device-check.sh unpacks it when
# present, builds the addon with the CUDA backend and runs the JS solver tests and `bench solve` on the GPU.
#
#   npm run build && bash scripts/device-bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f lib/index.js ] || { echo "lib/index.js is missing: run npm run build first" >&2; exit 1; }
node_bin=$(command -v node)
prefix=$(dirname "$(dirname "$node_bin")")
headers=""
for dir in "$prefix/include/node" "$HOME/.cache/node-gyp/$(node -p process.versions.node)/include/node"; do
  if [ -f "$dir/node_api.h" ]; then headers=$dir; break; fi
done
[ -n "$headers" ] || { echo "node_api.h not found next to $node_bin" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/napi-include" "$stage/node_modules/@huggingface"
cp "$node_bin" "$stage/bin/node"
cp "$headers"/{node_api.h,node_api_types.h,js_native_api.h,js_native_api_types.h} "$stage/napi-include/"
cp -r node_modules/node-addon-api node_modules/pngjs "$stage/node_modules/"
cp -r node_modules/@huggingface/tokenizers "$stage/node_modules/@huggingface/"
mkdir -p .device
# lib/**/*.js are build outputs; the tests and sources travel with the git tree.
tar -C "$stage" -cf - bin napi-include node_modules | xz -6 -T2 >.device/node-bundle.tar.xz.tmp
git ls-files -o --ignored --exclude-standard lib | grep '\.js$' | tar -cf - -T - | xz -6 >.device/lib-js.tar.xz.tmp
mv .device/node-bundle.tar.xz.tmp .device/node-bundle.tar.xz
mv .device/lib-js.tar.xz.tmp .device/lib-js.tar.xz
ls -la .device/
