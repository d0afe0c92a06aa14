/*
 * cmd: the subcommands. Each takes the argument vector starting at its own
 * name (argv[0] == "serve") and returns the process exit status. Only these
 * functions (and main) decide to end the process; everything below them
 * returns errors.
 */
#ifndef STRATD_CMD_COMMANDS_H
#define STRATD_CMD_COMMANDS_H

int cmd_serve(int argc, char **argv);
int cmd_bootstrap(int argc, char **argv);

#endif
