"""What both editors' plug-ins share, standard library only: the worker protocol, the
client, the dialogs' texts and the regions they send. The installer copies this
package into each plug-in's folder as ``fbcnn_frontend``; the worker imports
``core.frontend.protocol`` from here, so both ends speak one protocol."""
