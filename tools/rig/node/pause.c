/* The pod sandbox's process: holds the pod's namespaces, exits on SIGINT/SIGTERM, reaps
 * zombies. Built static (`gcc -static`) so the image is this one file. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {0}, reap = {0};
  stop.sa_handler = on_stop;
  sigaction(SIGINT, &stop, NULL);
  sigaction(SIGTERM, &stop, NULL);
  reap.sa_handler = on_child;
  reap.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &reap, NULL);
  for (;;) pause();
  return 1;
}
