/*
 * modeldeploy-pause: the sandbox process of a pod (containerd's sandbox_image).
 *
 * It holds the pod's namespaces open and does nothing else:
 *   - SIGINT and SIGTERM end it with status 0 (as PID 1 of a PID namespace a signal without
 *     a handler is dropped, so both get one);
 *   - SIGCHLD reaps every exited child, so a pod sharing its PID namespace leaves no zombies;
 *   - every other signal keeps its default action: nothing is ignored on purpose;
 *   - otherwise it sleeps in pause(2) forever.
 *
 * Built static (gcc -static) so the image can be FROM scratch.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "1"

static void stop(int signo) {
    (void)signo;
    _exit(0);
}

static void reap(int signo) {
    (void)signo;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int signo, void (*handler)(int), int flags) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-v") == 0) {
            printf("modeldeploy-pause %s\n", PAUSE_VERSION);
            return 0;
        }
        fprintf(stderr, "usage: %s [--version]\n", argv[0]);
        return 2;
    }
    if (handle(SIGINT, stop, 0) != 0 || handle(SIGTERM, stop, 0) != 0 ||
        handle(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART) != 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
