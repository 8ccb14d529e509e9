#!/usr/bin/env bash
# Build the carcheck extra damaged-case set (photos) from git repositories, byte-exact.
#
# usage: bash build_cases_extra.sh GIT_DIR [GIT_DIR ...] OUT_DIR
#
#   GIT_DIR  one clone (or bare/mirror git dir) per source repository named in manifest.csv:
#              HunterAlpha7/damdeci
#              yeldaryernazarov/hackathone-back
#              centrepointautobody/centrepointautobody.github.io
#            Any order works: each repository is matched to the directory that holds its manifest commit
#            (falling back to the position above when no directory holds it).
#   OUT_DIR  receives OUT_DIR/<case>/<file> for every row of manifest.csv
#
# Every file is written with `git cat-file -p <blob>` and checked against the manifest: git blob id
# (`git hash-object`) and byte count. Nothing is re-encoded; EXIF (including GPS, see README) is kept as
# in the repository. Exits non-zero and names the repository to fetch when something is missing.
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="$here/manifest.csv"

die() { echo "build_cases_extra: ERROR: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: bash build_cases_extra.sh GIT_DIR [GIT_DIR ...] OUT_DIR (one git dir per repository in manifest.csv)"
[ -f "$manifest" ] || die "manifest.csv not found next to this script ($manifest)"
command -v git >/dev/null || die "git is not installed"

args=("$@")
out="${args[$(( $# - 1 ))]}"
dirs=("${args[@]:0:$(( $# - 1 ))}")

# resolve each given directory to a git dir (a clone, a bare/mirror dir, or a folder holding repo/)
gits=()
for d in "${dirs[@]}"; do
  [ -d "$d" ] || die "directory '$d' does not exist"
  if git -C "$d" rev-parse --git-dir >/dev/null 2>&1; then gits+=("$d")
  elif [ -d "$d/repo" ] && git -C "$d/repo" rev-parse --git-dir >/dev/null 2>&1; then gits+=("$d/repo")
  else die "'$d' is not a git repository"; fi
done

# repositories in order of first appearance in the manifest, with their commits
mapfile -t repos < <(tail -n +2 "$manifest" | cut -d, -f3 | awk '!seen[$0]++')
declare -A commit_of
while IFS=, read -r _c _f repo commit _rest; do commit_of["$repo"]="$commit"; done < <(tail -n +2 "$manifest")

declare -A gitdir_of
for k in "${!repos[@]}"; do
  repo="${repos[$k]}"
  commit="${commit_of[$repo]}"
  hint="fetch github:$repo (commit $commit), e.g. git clone https://github.com/$repo"
  g=""
  for cand in "${gits[@]}"; do
    if git -C "$cand" cat-file -e "${commit}^{commit}" 2>/dev/null; then g="$cand"; break; fi
  done
  if [ -z "$g" ]; then
    g="${gits[$k]:-}"
    [ -n "$g" ] || die "no directory given for $repo: $hint"
    echo "build_cases_extra: warning: commit $commit of $repo is in none of the given directories; trying '$g' (position $((k + 1))) and continuing if all blobs are present" >&2
  fi
  gitdir_of["$repo"]="$g"
done

mkdir -p "$out" || die "cannot create OUT_DIR '$out'"
n=0; bad=0
while IFS=, read -r case file repo commit path blob bytes; do
  g="${gitdir_of[$repo]:-}"
  [ -n "$g" ] || die "no git dir for $repo (row $case/$file): fetch github:$repo"
  if ! git -C "$g" cat-file -e "$blob" 2>/dev/null; then
    die "blob $blob ($path) is missing in '$g': fetch github:$repo (commit $commit)"
  fi
  mkdir -p "$out/$case"
  dst="$out/$case/$file"
  git -C "$g" cat-file -p "$blob" > "$dst" || die "git cat-file failed for $blob ($repo:$path)"
  got_blob="$(git hash-object "$dst")"
  got_bytes="$(wc -c < "$dst" | tr -d ' ')"
  if [ "$got_blob" != "$blob" ] || [ "$got_bytes" != "$bytes" ]; then
    echo "build_cases_extra: MISMATCH $case/$file: blob $got_blob (want $blob), bytes $got_bytes (want $bytes)" >&2
    bad=$((bad + 1))
  fi
  n=$((n + 1))
done < <(tail -n +2 "$manifest")

ncases="$(tail -n +2 "$manifest" | cut -d, -f1 | sort -u | wc -l | tr -d ' ')"
[ "$bad" -eq 0 ] || die "$bad of $n files failed verification"
echo "build_cases_extra: wrote and verified $n files in $ncases cases under $out"
