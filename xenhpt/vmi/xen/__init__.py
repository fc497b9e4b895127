"""The Xen backend, a Dom0 tool over LibVMI: the target (``target.py``), finding a domain
and checking that this is Dom0 (``domain.py``), the code bytes our traps replace and their
repair after a killed tracer (``breakpoints.py``), the MSR writes that move the syscall
entry points (``msr.py``), and taking down a dead tracer's monitor ring (``monitor.py``)."""
