#!/usr/bin/env bash
# Packs files into a one-layer OCI image archive (an OCI image layout in a tar) without a
# container engine or registry: `ctr -n k8s.io images import FILE` accepts it, and the image's
# name travels in the index (`io.containerd.image.name`). The layer is reproducible: sorted
# names, mtime 0, owner 0:0.
#
# Usage: tests/cluster/image.sh --name NAME:TAG --out FILE.tar [options]
#   --file SRC:DST       copy host file SRC to DST in the image (repeatable)
#   --strip              strip debug info from the ELF files copied (debug builds shrink ~10x)
#   --with-libs          also copy every shared library the ELF files need (ldd), and the
#                        dynamic loader, at their host paths (glibc binaries from this host)
#   --dir DST[:MODE]     create an empty directory (repeatable), e.g. --dir /tmp:1777
#   --entrypoint PATH    the image's entrypoint (repeat for more argv words)
#   --env K=V            an environment variable (repeatable; PATH defaults to /usr/bin:/bin)
#   --user UID[:GID]     the default user
#   --label K=V          an image label (repeatable)
# NAME should be fully qualified as the CRI sees it (docker.io/emu-sriov/operator:dev,
# localhost/emu-sriov-pause:1): containerd's CRI looks images up by their normalized name.
set -euo pipefail

die() { echo "image.sh: $*" >&2; exit 1; }
json_str() {
  case $1 in *[\"\\]* | *$'\n'*) die "value '$1' has a quote, backslash or newline; not supported" ;; esac
  printf '"%s"' "$1"
}
json_list() { # json_list a b c → ["a","b","c"]
  local out="" v
  for v in "$@"; do out+="${out:+,}$(json_str "$v")"; done
  printf '[%s]' "$out"
}

name="" out="" with_libs=0 user="" strip=0
declare -a files=() dirs=() entry=() envs=() labels=()
while [ $# -gt 0 ]; do
  case $1 in
    --name) name=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    --dir) dirs+=("$2"); shift 2 ;;
    --with-libs) with_libs=1; shift ;;
    --strip) strip=1; shift ;;
    --entrypoint) entry+=("$2"); shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --user) user=$2; shift 2 ;;
    --label) labels+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$name" ] || die "--name NAME:TAG is required"
[ -n "$out" ] || die "--out FILE.tar is required"
case $name in *:*) ;; *) die "--name '$name' needs a tag (NAME:TAG)" ;; esac
tag=${name##*:}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root" "$work/layout/blobs/sha256"

add_file() { # add_file SRC DST
  local src=$1 dst=$2
  [ -e "$src" ] || die "no such file: $src"
  mkdir -p "$root$(dirname "$dst")"
  cp -L "$src" "$root$dst"
}
declare -a elfs=()
for f in "${files[@]}"; do
  src=${f%%:*} dst=${f#*:}
  [ "$src" != "$f" ] || die "--file '$f': expected SRC:DST"
  case $dst in /*) ;; *) die "--file '$f': DST must be absolute" ;; esac
  add_file "$src" "$dst"
  if head -c4 "$src" | grep -q 'ELF'; then
    elfs+=("$src")
    if [ "$strip" = 1 ]; then strip --strip-debug "$root$dst" || die "strip $src failed"; fi
  fi
done
if [ "$with_libs" = 1 ]; then
  for e in "${elfs[@]}"; do
    # ldd lines: "libx.so.1 => /lib/.../libx.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
    while read -r lib; do
      [ -n "$lib" ] && [ ! -e "$root$lib" ] && add_file "$lib" "$lib"
    done < <(ldd "$e" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p')
  done
fi
for d in "${dirs[@]}"; do
  path=${d%%:*} mode=755
  [ "$path" != "$d" ] && mode=${d#*:}
  mkdir -p "$root$path"
  chmod "$mode" "$root$path"
done

# The layer: uncompressed for the diff id, gzip for the blob.
tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -6 "$work/layer.tar"
blob() { # blob FILE → moves FILE into the layout, prints "digest size"
  local d s
  d=$(sha256sum "$1" | cut -d' ' -f1)
  s=$(stat -c %s "$1")
  mv "$1" "$work/layout/blobs/sha256/$d"
  echo "$d $s"
}
read -r layer_digest layer_size < <(blob "$work/layer.tar.gz")

have_path=0
for e in "${envs[@]}"; do case $e in PATH=*) have_path=1 ;; esac; done
[ $have_path = 1 ] || envs=("PATH=/usr/bin:/bin" "${envs[@]}")
cfg="{\"Env\":$(json_list "${envs[@]}")"
[ ${#entry[@]} -gt 0 ] && cfg+=",\"Entrypoint\":$(json_list "${entry[@]}")"
[ -n "$user" ] && cfg+=",\"User\":$(json_str "$user")"
if [ ${#labels[@]} -gt 0 ]; then
  l=""
  for kv in "${labels[@]}"; do l+="${l:+,}$(json_str "${kv%%=*}"):$(json_str "${kv#*=}")"; done
  cfg+=",\"Labels\":{$l}"
fi
cfg+="}"
printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"tests/cluster/image.sh"}]}' \
  "$cfg" "$diff_id" >"$work/config.json"
read -r config_digest config_size < <(blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":%s,"org.opencontainers.image.ref.name":%s}}]}' \
  "$manifest_digest" "$manifest_size" "$(json_str "$name")" "$(json_str "$tag")" >"$work/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$(dirname "$out")"
tar -C "$work/layout" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "image.sh: $name → $out ($(du -h "$out" | cut -f1), layer sha256:${layer_digest:0:12})"
