# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running the collection's own Python code in another process or on another host.

The copy worker (job.py) runs in a process of its own, the ssh transport's helper
(transport/ssh_helper.py) and the host side of a data node's reads (remote.py) on a storage host.
A module process started by Ansible imports its module_utils from a zip (AnsiballZ), so a
module's file may not exist on disk: ``source_of`` asks the module's loader first and reads the
file only when the loader has none.

On a storage host the code comes over ssh: ``python3 -c BOOTSTRAP`` reads a *bundle* from its
stdin (a length line, then JSON ``{modules, main}``: the source text of each module by its full
name), serves those modules from memory and runs ``main``'s ``main()``. Nothing is written on the
host, and the one argv word is the same for every caller.

Here, below data_copy/, because the worker ships only this folder (job.py): standard library only,
Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import sys

#: the loader run on a storage host (one argv word; see the module's docstring)
BOOTSTRAP = '''import sys,json,importlib.abc,importlib.util
n=int(sys.stdin.buffer.readline())
b=json.loads(sys.stdin.buffer.read(n).decode('utf-8'))
m=b['modules']
class F(importlib.abc.MetaPathFinder,importlib.abc.Loader):
    def find_spec(self,name,path=None,target=None):
        if name in m:
            return importlib.util.spec_from_loader(name,self,is_package=False)
        if any(k.startswith(name+'.') for k in m):
            return importlib.util.spec_from_loader(name,self,is_package=True)
    def create_module(self,spec):
        return None
    def exec_module(self,module):
        exec(compile(m.get(module.__name__,''),module.__name__,'exec'),module.__dict__)
sys.meta_path.insert(0,F())
importlib.import_module(b['main']).main()
'''


def source_of(module):
    """The source text of the imported ``module``."""
    loader = getattr(module, '__loader__', None)
    source = None
    if loader is not None and hasattr(loader, 'get_source'):
        source = loader.get_source(module.__name__)
    if source is None:
        with open(module.__file__, 'rb') as handle:
            source = handle.read().decode('utf-8')
    return source


def bundle(package, names, main):
    """The bytes BOOTSTRAP reads: the modules ``package + '.' + name`` for each of ``names``
    (imported here to find their source) and the name of the one whose ``main()`` runs."""
    modules = {}
    for short in names:
        name = package + '.' + short
        __import__(name)
        modules[name] = source_of(sys.modules[name])
    payload = json.dumps({'modules': modules, 'main': package + '.' + main}).encode('utf-8')
    return str(len(payload)).encode('ascii') + b'\n' + payload
