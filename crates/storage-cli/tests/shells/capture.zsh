# zsh -f capture.zsh DIR LINE: the matches zsh's completion system (compinit, with DIR first in
# $fpath) offers for LINE<TAB>, one per line. The markers are computed (${(U):-x}) so that the
# echo of the commands typed into the pty never looks like output.
zmodload zsh/zpty || exit 3
zpty z zsh -f -i || exit 3
integer tries=0
# Reads pty lines until one matches $1 (printing "$2"-prefixed matches); gives up after ~30 s.
read_until() {
  local line
  while (( tries++ < 3000 )); do
    if ! zpty -r -t z line; then sleep 0.01; continue; fi
    line=${${line//$'\r'/}%$'\n'}
    [[ $line == *"$1"* ]] && return 0
    [[ -n $2 && $line == *"$2"* ]] && print -r -- "${line#*$2}"
  done
  print -u2 "capture.zsh: no $1 from the pty"
  return 1
}
zpty -w z "fpath=(${(q)1} \$fpath); PS1=''; RPS1=''; unsetopt zle_bracketed_paste 2>/dev/null"
zpty -w z "autoload -Uz compinit && compinit -u -D"
zpty -w z 'compadd() {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  local -a __hits; local __h
  builtin compadd -A __hits "$@"
  for __h in $__hits; do print -r -- "${(U):-match}=$__h"; done
}'
zpty -w z '__cap_done() { print -r -- "${(U):-done}"; exit }; comppostfuncs=(__cap_done)'
zpty -w z "bindkey '^I' complete-word; print -r -- \${(U):-ready}"
read_until READY || exit 2
zpty -w -n z "$2"$'\t'
read_until DONE 'MATCH=' || exit 2
zpty -d z
