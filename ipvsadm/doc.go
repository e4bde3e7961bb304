// Package ipvsadm is ipvsadm's language, as ipvsadm 1.31 and libipvs speak
// it: the command-line parser (ParseArgs, Command), rule files (ParseRules,
// the ipvsadm-restore / ipvsadm-save format), the -L and -S printers, and
// the message texts and exit codes (Error).
//
// It is the control path's translator for the model in package ipvs:
// Apply and ApplyAll turn parsed commands into the model's typed changes
// (one all-or-nothing transaction) and map the model's errors, by
// operation and error as libipvs's ipvs_strerror does, to ipvsadm's
// messages and exit status. The data path (forwarder, conntrack,
// scheduler, rewrite) never imports this package.
package ipvsadm
